package client

import (
	"fmt"
	"slices"
	"testing"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/server"
)

// TestE2ESendRateLimited: a client that sends faster than its account's
// send rate ([S-8-23]) meets RATE_LIMITED, waits retry_after_ms and sends
// each refused message again under its cmid: every send ends SENT, and
// the recipient gets each message once.
func TestE2ESendRateLimited(t *testing.T) {
	n := startE2ENodeWith(t, func(c *node.Config) {
		c.Server.Sends = server.Budget{PerSecond: 100, Burst: 5}
	})
	alice := n.start(t, n.register(t, n.PhoneOn(0)))
	bob := n.start(t, n.register(t, n.PhoneOn(1)))
	const count = 30
	type result struct {
		cmid uint64
		err  error
	}
	done := make(chan result, count)
	var want []string
	for i := range count {
		body := fmt.Sprint("burst ", i)
		want = append(want, body)
		if _, err := alice.SendAsync(bob.User(), []byte(body), pb.ContentType_CONTENT_TEXT, func(s Sent, err error) {
			done <- result{s.CMID, err}
		}); err != nil {
			t.Fatal(err)
		}
	}
	cmids := map[uint64]bool{}
	for range count {
		r := <-done
		if r.err != nil {
			t.Fatalf("send %d: %v", r.cmid, r.err)
		}
		cmids[r.cmid] = true
	}
	if len(cmids) != count {
		t.Fatalf("%d distinct cmids answered SENT, want %d", len(cmids), count)
	}
	var got []string
	for range count {
		got = append(got, string(next[Message](t, bob, nil).Body))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("bob got %q, want each of %q once", got, want)
	}
	if refused := n.Server().Stats().RateLimited[server.LimitSends].Load(); refused == 0 {
		t.Fatal("no send was refused RATE_LIMITED: the test did not reach the limit")
	}
}
