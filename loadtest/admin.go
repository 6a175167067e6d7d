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

// adminClient reads the admin endpoints (internal/admin) of a node, or
// of a cluster's nodes, whose figures it sums.
type adminClient struct {
	bases []string
	http  *http.Client
}

func newAdminClient(addrs ...string) *adminClient {
	a := &adminClient{http: &http.Client{Timeout: 30 * time.Second}}
	for _, addr := range addrs {
		a.bases = append(a.bases, "http://"+addr)
	}
	return a
}

// serverMemory is the node's /debug/memory answer.
type serverMemory struct {
	HeapInuse int64 `json:"heap_inuse_bytes"`
	RSS       int64 `json:"rss_bytes"`
}

// memory reads the servers' memory, summed over the nodes; settle
// collects garbage first.
func (a *adminClient) memory(ctx context.Context, settle bool) (serverMemory, error) {
	var sum serverMemory
	for _, base := range a.bases {
		m, err := a.memoryOf(ctx, base, settle)
		if err != nil {
			return sum, err
		}
		sum.HeapInuse += m.HeapInuse
		sum.RSS += m.RSS
	}
	return sum, nil
}

// memoryOf reads one node's memory.
func (a *adminClient) memoryOf(ctx context.Context, base string, settle bool) (serverMemory, error) {
	url := base + "/debug/memory"
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

// metrics scrapes every node's /metrics and sums each metric's samples
// over their labels and the nodes.
func (a *adminClient) metrics(ctx context.Context) (map[string]float64, error) {
	sum := map[string]float64{}
	for _, base := range a.bases {
		m, err := a.metricsOf(ctx, base)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			sum[k] += v
		}
	}
	return sum, nil
}

// metricsOf scrapes one node's /metrics.
func (a *adminClient) metricsOf(ctx context.Context, base string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
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
