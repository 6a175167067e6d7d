package admin_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestReportMetrics: the user reports a node took and refused show in
// parley_reports_total by outcome (docs/operations.md, "User reports"):
// with one report an hour, the first is written, the second rate limited.
func TestReportMetrics(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.Reports.PerHour = 1 })
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	c, _ := n.Login(t, alice, 0)
	c.Expect(protocol.KindSynced)
	report := func() *pb.Report {
		return &pb.Report{Rid: c.NextRID(), User: bob.ID, Messages: []*pb.ReportedMessage{{Id: 1, Body: []byte("spam")}}, Reason: "spam"}
	}
	c.Send(protocol.KindReport, report())
	c.Expect(protocol.KindOK)
	c.Send(protocol.KindReport, report())
	c.ExpectError(protocol.CodeRateLimited)

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + n.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`parley_reports_total{outcome="written"} 1`, `parley_reports_total{outcome="rate_limited"} 1`,
		`parley_reports_total{outcome="failed"} 0`, `parley_reports_waiting 0`,
	} {
		if !strings.Contains(string(b), want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}
