package server_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
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
	target := n.Phone()
	budgetFollowsTheAccount(t, n, 10, func(c *wiretest.Client) *pb.Error {
		t.Helper()
		rid := c.NextRID()
		return requestRID(t, c, rid, protocol.KindLookup, &pb.Lookup{Rid: rid, Phones: []string{target}}, protocol.KindLookupResult, &pb.LookupResult{})
	})
}

// budgetFollowsTheAccount checks a per-account request budget of limit a
// minute: an account's requests (ask) beyond it are refused RATE_LIMITED
// with a delay, also after reconnecting and from its companion, while
// another account's go through.
func budgetFollowsTheAccount(t *testing.T, n *nodetest.Node, limit int, ask func(*wiretest.Client) *pb.Error) {
	t.Helper()
	owner, bystander := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	c, _ := n.Login(t, owner, 0)
	companion := n.Link(t, c, "second")
	for i := range limit {
		if e := ask(c); e != nil {
			t.Fatalf("request %d of %d refused: %v", i+1, limit, e.Code)
		}
	}
	if e := ask(c); e == nil || e.Code != protocol.CodeRateLimited || e.RetryAfterMs == 0 {
		t.Fatalf("request %d in a minute: %v, want RATE_LIMITED with a delay", limit+1, e)
	}
	c.Conn.Close()
	again, _ := n.Login(t, owner, 0)
	if e := ask(again); e == nil || e.Code != protocol.CodeRateLimited {
		t.Fatalf("after reconnecting: %v, want still RATE_LIMITED", e)
	}
	other, _ := n.Login(t, companion, 0)
	if e := ask(other); e == nil || e.Code != protocol.CodeRateLimited {
		t.Fatalf("from the account's companion: %v, want RATE_LIMITED", e)
	}
	b, _ := n.Login(t, bystander, 0)
	if e := ask(b); e != nil {
		t.Fatalf("a bystander's request: %v", e.Code)
	}
}

// requestRID sends req (whose rid is rid) on c and reads frames until the
// answer with that rid: an Error, returned, or a frame of kind answer,
// parsed into into, and then nil.
func requestRID(t *testing.T, c *wiretest.Client, rid uint32, kind protocol.Kind, req proto.Message, answer protocol.Kind, into interface {
	proto.Message
	GetRid() uint32
}) *pb.Error {
	t.Helper()
	c.Send(kind, req)
	for {
		f, err := c.Next(wiretest.Timeout)
		if err != nil {
			t.Fatalf("%v %d: %v", kind, rid, err)
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
		case answer:
			if err := codec.ParseProto(f.Body, into); err != nil {
				t.Fatal(err)
			}
			if into.GetRid() == rid {
				return nil
			}
		}
	}
}

// TestKeyFetchBudgetFollowsTheAccount: KEYS_FETCH is limited per account
// ([S-17-4]), like LOOKUP: over the budget the answer is RATE_LIMITED with
// a delay, on a new connection and on the account's companion too; another
// account fetches the same bundles unaffected.
func TestKeyFetchBudgetFollowsTheAccount(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Server.KeyFetchesPerMinute = 5 })
	target := n.RegisterOn(t, 1)
	budgetFollowsTheAccount(t, n, 5, func(c *wiretest.Client) *pb.Error {
		t.Helper()
		rid := c.NextRID()
		return requestRID(t, c, rid, protocol.KindKeysFetch, &pb.KeysFetch{Rid: rid, User: target.ID}, protocol.KindKeyBundles, &pb.KeyBundles{})
	})
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

// TestLookupMergesShards: a LOOKUP of numbers on both shards is answered
// by one LOOKUP_RESULT holding what every shard found: each shard answers
// its part to the connection and the server merges them. Two lookups in
// flight at once on one connection are kept apart.
func TestLookupMergesShards(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Shards = 3 })
	var users []wiretest.User
	for shard := range 3 {
		users = append(users, n.RegisterOn(t, shard))
	}
	c, _ := n.Login(t, users[0], 0)
	lookups := map[uint32][]wiretest.User{
		c.NextRID(): users,                // found on every shard
		c.NextRID(): users[1:2],           // one shard
		c.NextRID(): {},                   // unknown numbers only
		c.NextRID(): {users[2], users[0]}, // two shards
	}
	for rid, want := range lookups {
		phones := []string{n.PhoneOn(0), n.PhoneOn(1), n.PhoneOn(2)} // unregistered
		for _, u := range want {
			phones = append(phones, u.Phone)
		}
		c.Send(protocol.KindLookup, &pb.Lookup{Rid: rid, Phones: phones})
	}
	for range lookups {
		var r pb.LookupResult
		c.ExpectProto(protocol.KindLookupResult, &r, protocol.KindSynced)
		want, ok := lookups[r.Rid]
		if !ok {
			t.Fatalf("a result for rid %d, asked or answered already", r.Rid)
		}
		delete(lookups, r.Rid)
		got := map[string]uint64{}
		for _, ct := range r.Contacts {
			got[ct.Phone] = ct.User
		}
		if len(got) != len(want) || len(r.Contacts) != len(want) {
			t.Fatalf("rid %d found %v, want %v", r.Rid, r.Contacts, want)
		}
		for _, u := range want {
			if got[u.Phone] != u.ID {
				t.Fatalf("rid %d: %s is %d, want %d", r.Rid, u.Phone, got[u.Phone], u.ID)
			}
		}
	}
}
