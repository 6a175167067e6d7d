package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// adminClient reads a node's admin endpoint (internal/admin).
type adminClient struct {
	base string
	http *http.Client
}

func newAdminClient(addr string) *adminClient {
	return &adminClient{base: "http://" + addr, http: &http.Client{Timeout: 30 * time.Second}}
}

// serverMemory is the node's /debug/memory answer.
type serverMemory struct {
	HeapInuse int64 `json:"heap_inuse_bytes"`
	RSS       int64 `json:"rss_bytes"`
}

// memory reads the server's memory; settle collects garbage first.
func (a *adminClient) memory(ctx context.Context, settle bool) (serverMemory, error) {
	url := a.base + "/debug/memory"
	if settle {
		url += "?settle=1"
	}
	var m serverMemory
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return m, err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return m, fmt.Errorf("loadtest: admin: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("loadtest: admin %s: %s", url, resp.Status)
	}
	return m, json.NewDecoder(resp.Body).Decode(&m)
}

// metrics scrapes /metrics and sums each metric's samples over their
// labels.
func (a *adminClient) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("loadtest: admin: %w", err)
	}
	defer resp.Body.Close()
	return parseMetrics(bufio.NewScanner(resp.Body))
}

// keepLabels names the metrics whose samples parseMetrics keeps apart by
// label: the server's refusals by limit, for the abuse scenario.
var keepLabels = map[string]bool{"parley_rate_limited_total": true}

// parseMetrics reads the Prometheus text format, summing samples of one
// name over their labels; the samples of the metrics in keepLabels are
// also kept one by one, under the name with its labels.
func parseMetrics(sc *bufio.Scanner) (map[string]float64, error) {
	out := map[string]float64{}
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			name = line[:i]
			if j := strings.LastIndexByte(line, '}'); j > i {
				rest = line[j+1:]
			}
		} else {
			name, rest, _ = strings.Cut(line, " ")
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
		if keepLabels[name] {
			out[line[:len(line)-len(rest)]] = v
		}
	}
	return out, sc.Err()
}
