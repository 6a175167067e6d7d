package ledger

import (
	"slices"
	"testing"
)

// TestFlow checks the bookkeeping of one flow: first deliveries, a second
// copy, a reorder, a resent cmid overtaken legitimately, and what is lost.
func TestFlow(t *testing.T) {
	var f Flow
	for _, c := range []uint64{1, 2, 3, 4, 70} {
		f.Ack(c)
	}
	if f.Ack(2) {
		t.Error("a repeated SENT counted as new")
	}
	for _, step := range []struct {
		cmid uint64
		want Verdict
	}{
		{1, Delivered},
		{1, DeliveredTwice},
		{3, Delivered},
		{2, DeliveredOutOfOrder},
	} {
		if v := f.Receive(step.cmid); v != step.want {
			t.Errorf("cmid %d: %v, want %v", step.cmid, v, step.want)
		}
	}
	f.MarkResent(5)
	f.Receive(6)
	if v := f.Receive(5); v != Delivered {
		t.Errorf("resent 5 after 6: %v, want accepted", v)
	}
	if got := f.Lost(); got != 2 {
		t.Errorf("lost %d, want 2 (cmids 4 and 70)", got)
	}
	if got := f.LostCMIDs(10); !slices.Equal(got, []uint64{4, 70}) {
		t.Errorf("lost cmids %v, want [4 70]", got)
	}
	if got := f.LostCMIDs(1); !slices.Equal(got, []uint64{4}) {
		t.Errorf("lost cmids with limit 1: %v, want [4]", got)
	}
	if got := f.Missing(6); got != 1 {
		t.Errorf("missing %d of 1..6, want 1 (cmid 4)", got)
	}
	if a, r := f.Counts(); a != 5 || r != 5 {
		t.Errorf("counts %d acked, %d received; want 5, 5", a, r)
	}
}
