package admin_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/parley-im/parley/internal/admin"
	"github.com/parley-im/parley/internal/node"
)

// get answers GET path on n's admin endpoint: status and body.
func get(t *testing.T, base, path string) (int, string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHealthAndReadiness: /healthz answers while the process lives;
// /readyz only while every shard serves, the node is not draining and the
// disk guard has not tripped.
func TestHealthAndReadiness(t *testing.T) {
	n := startNode(t, nil)
	base := "http://" + n.AdminAddr().String()
	if code, body := get(t, base, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, base, "/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}

	// A changing request without the header is refused (a web page cannot
	// send it cross-origin without a preflight).
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Post(base+"/drain", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST /drain without %s: %s, want 403", admin.HeaderMutate, resp.Status)
	}
	select {
	case <-n.Draining():
		t.Fatal("drained without the header")
	default:
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/drain", nil)
	req.Header.Set(admin.HeaderMutate, "test")
	if resp, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("POST /drain: %s", resp.Status)
	}
	if code, body := get(t, base, "/readyz"); code != 503 || body != "not ready: draining\n" {
		t.Errorf("/readyz while draining: %d %q", code, body)
	}
	if code, _ := get(t, base, "/healthz"); code != 200 {
		t.Errorf("/healthz while draining: %d", code)
	}
}

// TestNotReadyWhenDiskFull: below the free-space reserve the node stores
// nothing new, and says so at /readyz.
func TestNotReadyWhenDiskFull(t *testing.T) {
	n := startNode(t, func(c *node.Config) {
		c.MinFreeBytes = 1 << 30
		c.FreeSpace = func(string) (uint64, error) { return 1 << 20, nil }
	})
	code, body := get(t, "http://"+n.AdminAddr().String(), "/readyz")
	if code != 503 || !strings.Contains(body, "free disk space below the reserve") {
		t.Errorf("/readyz: %d %q", code, body)
	}
}
