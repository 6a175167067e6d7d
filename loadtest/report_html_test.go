package loadtest

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestTickLabels: axes have round ticks whose labels all differ and never
// use exponents, from sub-second runs to millions of messages.
func TestTickLabels(t *testing.T) {
	labels := func(top float64, n int) []string {
		step, vals := ticks(top, n)
		var out []string
		for _, v := range vals {
			out = append(out, tickLabel(v, step))
		}
		return out
	}
	for _, tt := range []struct {
		top  float64
		n    int
		want []string
	}{
		{14570, 4, []string{"0", "5k", "10k", "15k"}},
		{1.4, 5, []string{"0", "0.5", "1.0", "1.5"}},
		{2.1, 5, []string{"0", "0.5", "1.0", "1.5", "2.0", "2.5"}},
		{3, 5, []string{"0", "1", "2", "3"}},
		{47, 5, []string{"0", "10", "20", "30", "40", "50"}},
		{0, 5, []string{"0", "0.2", "0.4", "0.6", "0.8", "1.0"}},
		{0.0034, 4, []string{"0", "0.001", "0.002", "0.003", "0.004"}},
		{2.5e6, 4, []string{"0", "1M", "2M", "3M"}},
		{1800, 4, []string{"0", "500", "1000", "1500", "2000"}},
	} {
		if got := labels(tt.top, tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("ticks(%v, %d) = %q, want %q", tt.top, tt.n, got, tt.want)
		}
	}
	for top := 0.05; top < 5e7; top *= 1.37 {
		for _, n := range []int{4, 5} {
			step, vals := ticks(top, n)
			got := labels(top, n)
			seen := make(map[string]bool)
			for _, l := range got {
				if seen[l] || strings.ContainsAny(l, "eE") {
					t.Fatalf("ticks(%v, %d): labels %q", top, n, got)
				}
				seen[l] = true
			}
			if vals[len(vals)-1] < top || len(vals) > 2*n+2 || step <= 0 {
				t.Fatalf("ticks(%v, %d) = %v", top, n, vals)
			}
		}
	}
}

// TestHTMLReportShortRun: a run of one point still draws it, its axes
// read like numbers, and the page explains its terms.
func TestHTMLReportShortRun(t *testing.T) {
	r := &Result{Scenario: "offline", Passed: true, Series: []Point{{T: 0.7, Rate: 14570, LatencyP50: 900, LatencyP99: 3000}}}
	var b strings.Builder
	if err := r.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	// Each series is a segment from the start to the point.
	if n := strings.Count(page, `points="60.0,`); n != 3 {
		t.Errorf("%d segments from the start drawn, want one for each of the three series:\n%s", n, page)
	}
	axis := regexp.MustCompile(`text-anchor="(?:end|middle)">([^<]*)</text>`)
	var got []string
	for _, m := range axis.FindAllStringSubmatch(page, -1) {
		got = append(got, m[1])
	}
	if want := "0 5k 10k 15k 0s 0.2s 0.4s 0.6s"; !strings.HasPrefix(strings.Join(got, " "), want) {
		t.Errorf("rate chart's axis labels %q, want them to start %q", got, want)
	}
	for _, g := range Glossary {
		if !strings.Contains(page, "<dt>"+g.Term+"</dt>") {
			t.Errorf("the page does not explain %q", g.Term)
		}
	}
	for _, term := range []string{"uncorrected", "ops/commit", "skipped"} {
		if !strings.Contains(fmt.Sprint(Glossary), term) {
			t.Errorf("the glossary lacks %q", term)
		}
	}
}

// TestHTMLLatencyGaps: a second with no deliveries is a gap in the
// latency lines, not a drop to zero.
func TestHTMLLatencyGaps(t *testing.T) {
	r := &Result{Series: []Point{
		{T: 1, Rate: 10, LatencyP50: 900, LatencyP99: 3000},
		{T: 2, Rate: 0},
		{T: 3, Rate: 10, LatencyP50: 800, LatencyP99: 2000},
	}}
	var b strings.Builder
	if err := r.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	// The rate line is one polyline; each latency line two pieces.
	if n := strings.Count(b.String(), "<polyline"); n != 5 {
		t.Errorf("%d polylines, want 5", n)
	}
}
