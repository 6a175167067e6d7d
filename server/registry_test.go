package server

import (
	"testing"

	"github.com/parley-im/parley/storage"
)

// TestRegistry: a ref resolves to its connection while it is open, and
// never again once it closed, even when a new connection takes its slot;
// refs of another node or boot resolve to nothing.
func TestRegistry(t *testing.T) {
	r := NewRegistry(3, 7)
	a, b := &conn{}, &conn{}
	if !r.add(a) || !r.add(b) {
		t.Fatal("add refused")
	}
	if a.ref.Node != 3 || a.ref.Gen != 7 || a.ref.IsZero() || a.ref == b.ref {
		t.Fatalf("refs %+v and %+v", a.ref, b.ref)
	}
	if got := r.Endpoint(a.ref); got != storage.Endpoint(a) {
		t.Fatalf("Endpoint(a) = %v", got)
	}
	old := a.ref
	r.remove(a)
	if got := r.Endpoint(old); got != nil {
		t.Fatalf("closed connection resolves to %v", got)
	}
	c := &conn{}
	if !r.add(c) {
		t.Fatal("add refused")
	}
	if c.ref.ID&slotMask != old.ID&slotMask {
		t.Fatalf("slot not reused: %x after %x", c.ref.ID, old.ID)
	}
	if got := r.Endpoint(old); got != nil {
		t.Fatalf("a stale ref resolves to the slot's new connection %v", got)
	}
	if got := r.Endpoint(c.ref); got != storage.Endpoint(c) {
		t.Fatalf("Endpoint(c) = %v", got)
	}
	for _, ref := range []storage.ConnRef{
		{Node: 4, Gen: 7, ID: c.ref.ID}, // another node
		{Node: 3, Gen: 6, ID: c.ref.ID}, // an earlier boot
		{},
		{Node: 3, Gen: 7, ID: 1<<slotBits | slotMask}, // a slot never used
	} {
		if got := r.Endpoint(ref); got != nil {
			t.Errorf("Endpoint(%+v) = %v, want nil", ref, got)
		}
	}
	r.remove(a) // twice: nothing
	if d := (&conn{}); !r.add(d) || d.ref.ID&slotMask == c.ref.ID&slotMask {
		t.Fatalf("a second remove freed the slot twice: %x", d.ref.ID)
	}
}

// TestRegistryManyChunks: connections beyond one chunk of the table
// resolve, each to itself.
func TestRegistryManyChunks(t *testing.T) {
	r := NewRegistry(0, 1)
	conns := make([]*conn, 3*chunkSize+5)
	for i := range conns {
		conns[i] = &conn{}
		if !r.add(conns[i]) {
			t.Fatal("add refused")
		}
	}
	for i, c := range conns {
		if got := r.Endpoint(c.ref); got != storage.Endpoint(c) {
			t.Fatalf("conn %d: Endpoint = %v", i, got)
		}
	}
}

// TestRegistryResolveAllocs: the shards resolve a ref for every answer
// and entry they emit, so it must not allocate.
func TestRegistryResolveAllocs(t *testing.T) {
	r := NewRegistry(0, 1)
	c := &conn{}
	r.add(c)
	var ep storage.Endpoint
	if n := testing.AllocsPerRun(100, func() { ep = r.Endpoint(c.ref) }); n != 0 {
		t.Fatalf("Endpoint allocates %v times", n)
	}
	if ep == nil {
		t.Fatal("not resolved")
	}
}

func BenchmarkRegistryEndpoint(b *testing.B) {
	r := NewRegistry(0, 1)
	conns := make([]*conn, 4096)
	for i := range conns {
		conns[i] = &conn{}
		r.add(conns[i])
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if r.Endpoint(conns[i&4095].ref) == nil {
				b.Fatal("not resolved")
			}
			i++
		}
	})
}
