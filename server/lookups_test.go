package server_test

import (
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestLookupBudgetFollowsTheAccount: issue 9 found one account checking
// 4.8 million numbers in 20 s by reconnecting, because the LOOKUP limit
// lived on the connection. The budget now belongs to the account: spent on
// one connection, it stays spent on a new connection and on the account's
// companion; another account's lookups are unaffected ([S-9-11]).
func TestLookupBudgetFollowsTheAccount(t *testing.T) {
	n := nodetest.Start(t, nil)
	scraper, bystander := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	c, _ := n.Login(t, scraper, 0)
	companion := n.Link(t, c, "second")
	target := n.Phone()
	ask := func(c *wiretest.Client) *pb.Error {
		t.Helper()
		rid := c.NextRID()
		c.Send(protocol.KindLookup, &pb.Lookup{Rid: rid, Phones: []string{target}})
		for {
			f, err := c.Next(wiretest.Timeout)
			if err != nil {
				t.Fatalf("lookup %d: %v", rid, err)
			}
			switch f.Kind {
			case protocol.KindError:
				var e pb.Error
				if err := codec.ParseProto(f.Body, &e); err != nil {
					t.Fatal(err)
				}
				if e.Rid == rid {
					return &e
				}
			case protocol.KindLookupResult:
				var r pb.LookupResult
				if err := codec.ParseProto(f.Body, &r); err != nil {
					t.Fatal(err)
				}
				if r.Rid == rid {
					return nil
				}
			}
		}
	}
	for i := range 10 {
		if e := ask(c); e != nil {
			t.Fatalf("lookup %d of 10 refused: %v", i+1, e.Code)
		}
	}
	if e := ask(c); e == nil || e.Code != protocol.CodeRateLimited || e.RetryAfterMs == 0 {
		t.Fatalf("the 11th lookup in a minute: %v, want RATE_LIMITED with a delay", e)
	}
	c.Conn.Close()
	again, _ := n.Login(t, scraper, 0)
	if e := ask(again); e == nil || e.Code != protocol.CodeRateLimited {
		t.Fatalf("after reconnecting: %v, want still RATE_LIMITED", e)
	}
	other, _ := n.Login(t, companion, 0)
	if e := ask(other); e == nil || e.Code != protocol.CodeRateLimited {
		t.Fatalf("from the account's companion: %v, want RATE_LIMITED", e)
	}
	b, _ := n.Login(t, bystander, 0)
	if e := ask(b); e != nil {
		t.Fatalf("a bystander's lookup: %v", e.Code)
	}
}

// TestLinkRequestsPerConnection: one unauthenticated connection may ask
// for at most three link codes ([S-9-12]); issue 9 saw four connections
// make 6.7 million. A new connection may ask again, and a bystander's
// conversation goes on.
func TestLinkRequestsPerConnection(t *testing.T) {
	n := nodetest.Start(t, nil)
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	c := n.Dial(t)
	for i := range 4 {
		rid := c.NextRID()
		c.Send(protocol.KindLinkRequest, &pb.LinkRequest{Rid: rid, Version: protocol.Version, DeviceName: "x"})
		if i < 3 {
			var code pb.LinkCode
			c.ExpectProto(protocol.KindLinkCode, &code)
			if code.Rid != rid {
				t.Fatalf("LinkCode rid %d, want %d", code.Rid, rid)
			}
			continue
		}
		if e := c.ExpectError(protocol.CodeRateLimited); e.Rid != rid {
			t.Fatalf("refusal rid %d, want %d", e.Rid, rid)
		}
	}
	fresh := n.Dial(t)
	fresh.Send(protocol.KindLinkRequest, &pb.LinkRequest{Rid: 1, Version: protocol.Version, DeviceName: "y"})
	fresh.ExpectProto(protocol.KindLinkCode, &pb.LinkCode{})
	a, _ := n.Login(t, alice, 0)
	b, _ := n.Login(t, bob, 0)
	id := a.SendText(bob.ID, 1, "still here")
	if m := b.Message(); m.ID != id {
		t.Fatalf("bob got %+v, want message %d", m, id)
	}
}
