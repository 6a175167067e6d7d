package admin_test

import (
	"net/http"
	"testing"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestRateLimitMetrics: an operator sees the requests the server's rate
// limits refused (docs/security.md): a fourth LINK_REQUEST on one
// connection moves parley_rate_limited_total by one.
func TestRateLimitMetrics(t *testing.T) {
	n := startNode(t, nil)
	base := "http://" + n.AdminAddr().String()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	before := scrape(t, client, base)
	if _, ok := before["parley_rate_limited_total"]; !ok {
		t.Fatal("metric parley_rate_limited_total missing")
	}
	c := n.Dial(t)
	for i := range 4 {
		c.Send(protocol.KindLinkRequest, &pb.LinkRequest{Rid: c.NextRID(), Version: protocol.Version})
		if i < 3 {
			c.ExpectProto(protocol.KindLinkCode, &pb.LinkCode{})
		}
	}
	c.ExpectError(protocol.CodeRateLimited)
	if got := scrape(t, client, base)["parley_rate_limited_total"] - before["parley_rate_limited_total"]; got != 1 {
		t.Errorf("parley_rate_limited_total moved by %v, want 1", got)
	}
}
