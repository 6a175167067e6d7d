package loadtest

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"strings"
)

// Glossary explains the terms of the report, in its order. parley-load
// -help prints it and the HTML report ends with it.
var Glossary = []struct{ Term, Meaning string }{
	{"lost, duplicated, reordered, skipped",
		"messages whose SENT came but which never arrived; arrived twice; arrived before one sent earlier by the same device; " +
			"inbox entries a device never got (its seq jumped). Any of them fails the run."},
	{"errors", "error frames from the server, connections dropped, dials that failed, sends written again after a reconnect, GOAWAYs."},
	{"rate (msg/s)", "messages delivered per second inside the measured window: after --warmup, until the traffic stops."},
	{"latency end to end",
		"from the moment a message was due to be sent to its arrival at the recipient. At a fixed --rate a message is due on the " +
			"schedule, so time it spent waiting to be written counts: the figure is corrected for coordinated omission."},
	{"uncorrected", "the same latency from the moment the message was written. Far below the corrected figure, it says the senders fell behind their schedule."},
	{"p50 … max (n=…)", "percentiles: half the messages took at most p50, 99% at most p99; n is how many were measured."},
	{"connect", "TCP, TLS and login until the server said the backlog was delivered (Synced)."},
	{"storm", "the storm step alone: every device cut and reconnected, from the cut to the last one synced again; its client TLS handshakes, how many resumed a session " +
		"(--resume) and the bytes of each; the server's CPU over the step per reconnect, failed attempts included, its cores busy during and before the storm, " +
		"and the handshakes it completed and failed (timed out) meanwhile."},
	{"bytes per message", "all bytes a connection wrote (up) or read (down), acks, receipts and pings included, per delivered message: on the wire with TLS, and in frames before it."},
	{"server memory per connection", "growth of the server's RSS and Go heap over its settled state before the connections, divided by their number."},
	{"µs CPU per delivered message", "the server's (or the load generator's) CPU time in the measured window, per message delivered in it."},
	{"commits, ops/commit, µs/commit",
		"a shard writes everything that arrived since its last write in one Pebble batch (group commit): how many batches the " +
			"server committed, how many operations (stored messages, acks, receipts, logins) each applied on average, and how long one took."},
	{"fsyncs", "syncs of the shards' write-ahead logs, per delivered message, and how long one took."},
	{"fan-out to the last member", "groups: from the moment a group message was due to the moment its last member had it."},
}

// WriteHTML writes a self-contained page charting rate and latency over
// time (inline SVG, no scripts, nothing fetched), with the text report and
// the Glossary.
func (r *Result) WriteHTML(w io.Writer) error {
	var text strings.Builder
	r.WriteText(&text)
	data := struct {
		R        *Result
		Text     string
		Rate     template.HTML
		Lat      template.HTML
		Glossary any
	}{R: r, Text: text.String(), Glossary: Glossary}
	rate := make([]float64, len(r.Series))
	p50 := make([]float64, len(r.Series))
	p99 := make([]float64, len(r.Series))
	ts := make([]float64, len(r.Series))
	for i, p := range r.Series {
		ts[i], rate[i], p50[i], p99[i] = p.T, p.Rate, float64(p.LatencyP50)/1e3, float64(p.LatencyP99)/1e3
	}
	data.Rate = svgChart("delivered messages per second", ts, []series{{name: "msg/s", color: "#1f77b4", v: rate}})
	// A second without deliveries has no latency: a gap, not a zero.
	data.Lat = svgChart("end-to-end latency per second (ms)", ts, []series{
		{name: "p50", color: "#2ca02c", v: p50, zeroIsGap: true},
		{name: "p99", color: "#d62728", v: p99, zeroIsGap: true},
	})
	return htmlPage.Execute(w, data)
}

type series struct {
	name, color string
	v           []float64
	zeroIsGap   bool // a zero means no value
}

// svgChart draws series over time, on axes with round ticks. Each value
// holds for the interval that ends at its time (since the previous point,
// or the start), so it is drawn as a step over that interval: a run of
// one point is one segment.
func svgChart(title string, t []float64, ss []series) template.HTML {
	const W, H, L, B = 800.0, 260.0, 60.0, 30.0
	var maxT, maxV float64
	for _, x := range t {
		maxT = max(maxT, x)
	}
	for _, s := range ss {
		for _, v := range s.v {
			maxV = max(maxV, v)
		}
	}
	// The time axis ends with the run; the value axis at a round tick.
	tStep, tTicks := ticks(maxT, 5)
	if maxT > 0 {
		for len(tTicks) > 2 && tTicks[len(tTicks)-1] > maxT*(1+1e-9) {
			tTicks = tTicks[:len(tTicks)-1]
		}
	} else {
		maxT = tTicks[len(tTicks)-1]
	}
	vStep, vTicks := ticks(maxV, 4)
	maxV = vTicks[len(vTicks)-1]
	x := func(v float64) float64 { return L + v/maxT*(W-L-10) }
	y := func(v float64) float64 { return H - B - v/maxV*(H-B-20) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`, W, H)
	fmt.Fprintf(&b, `<text x="%.0f" y="14" font-size="13">%s</text>`, L, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#888"/>`, L, H-B, W-10, H-B)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="20" x2="%.0f" y2="%.0f" stroke="#888"/>`, L, L, H-B)
	for _, v := range vTicks {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`, L-4, y(v)+4, tickLabel(v, vStep))
	}
	for _, tv := range tTicks {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%ss</text>`, x(tv), H-B+16, tickLabel(tv, tStep))
	}
	if len(t) == 0 {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle" fill="#888">no data</text>`, (W+L)/2, H/2)
	}
	for k, s := range ss {
		var pts strings.Builder
		line := func() {
			if pts.Len() > 0 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, s.color, strings.TrimSpace(pts.String()))
				pts.Reset()
			}
		}
		for i, v := range s.v {
			if s.zeroIsGap && v == 0 {
				line()
				continue
			}
			from := 0.0
			if i > 0 {
				from = t[i-1]
			}
			fmt.Fprintf(&pts, "%.1f,%.1f %.1f,%.1f ", x(from), y(v), x(t[i]), y(v))
		}
		line()
		fmt.Fprintf(&b, `<text x="%.0f" y="14" text-anchor="end" fill="%s">%s</text>`, W-10-50*float64(len(ss)-1-k), s.color, template.HTMLEscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// ticks returns round values from 0 to at least top, about n steps
// apart: steps of 1, 2 or 5 times a power of ten, so that no two labels
// read alike. A top of 0 or less gets the ticks of 1.
func ticks(top float64, n int) (step float64, vals []float64) {
	if !(top > 0) || math.IsInf(top, 0) {
		top = 1
	}
	raw := top / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if step = m * mag; step >= raw*(1-1e-9) {
			break
		}
	}
	last := math.Ceil(top/step - 1e-9)
	for i := 0.0; i <= last; i++ {
		vals = append(vals, i*step)
	}
	return step, vals
}

// tickLabel formats tick v of an axis with the given step: as many
// decimals as the step needs, thousands as "k" and millions as "M"
// ("15k", "2.5M", "0.2"), never in exponent form.
func tickLabel(v, step float64) string {
	suffix := ""
	switch {
	case step >= 1e6:
		v, step, suffix = v/1e6, step/1e6, "M"
	case step >= 1e3:
		v, step, suffix = v/1e3, step/1e3, "k"
	}
	decimals := 0 // steps are 1, 2 or 5 times a power of ten
	if step < 1 {
		decimals = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	if v == 0 {
		return "0"
	}
	return strconv.FormatFloat(v, 'f', decimals, 64) + suffix
}

var htmlPage = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>parley-load: {{.R.Scenario}}</title>
<style>body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em}dt{font-weight:bold;margin-top:.5em}</style></head>
<body><h1>parley-load: {{.R.Scenario}}</h1>
<pre>{{.Text}}</pre>
<div>{{.Rate}}</div>
<div>{{.Lat}}</div>
<h2>What the figures mean</h2>
<dl>{{range .Glossary}}<dt>{{.Term}}</dt><dd>{{.Meaning}}</dd>
{{end}}</dl>
</body></html>
`))
