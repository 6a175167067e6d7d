package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol/pb"
)

// TestGroupChatReceipts checks the per-message summary of group receipts
// ([S-10-7], [S-16-8]): counts of members who received and read, READ
// implying delivered, receipts before SENT, and members joining.
func TestGroupChatReceipts(t *testing.T) {
	var out bytes.Buffer
	con := &console{out: &out, err: &out, plain: true, now: time.Now}
	ui := newChatUI(con, newReadMarker(con))
	ui.me = 1
	ui.setGroup(client.GroupInfo{ID: 9, GSeq: 2, Members: []client.GroupMember{{User: 1}, {User: 2}, {User: 3}}})
	a, b := ui.add("first"), ui.add("second")
	now := time.Now()
	ui.onSent(a)(client.Sent{ID: 10, Time: now}, nil)
	del, read := pb.ReceiptType_RECEIPT_DELIVERED, pb.ReceiptType_RECEIPT_READ
	ui.groupReceipts(del, []client.ReceiptItem{{Peer: 2, UpTo: 10}})
	ui.groupReceipts(read, []client.ReceiptItem{{Peer: 3, UpTo: 20}}) // before second's SENT
	ui.onSent(b)(client.Sent{ID: 20, Time: now}, nil)
	ui.groupReceipts(read, []client.ReceiptItem{{Peer: 2, UpTo: 20}, {Peer: 2, UpTo: 15}})
	ui.groupReceipts(del, []client.ReceiptItem{{Peer: 2, UpTo: 20}}) // changes no count: no line

	got := out.String()
	if lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n"); len(lines) != 5 {
		t.Errorf("%d lines, want one per change of a message's marks:\n%s", len(lines), got)
	}
	for _, want := range []string{
		"  sent " + con.when(now) + ": first\n",
		"  delivered 1/2: first\n",
		"  delivered 2/2, read 1/2: first\n", // carol's READ counts as delivered too
		"  delivered 1/2, read 1/2 " + con.when(now) + ": second\n",
		"  read 2/2: second (and 1 before)\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if len(ui.mine) != 0 {
		t.Errorf("%d messages kept after every member read them", len(ui.mine))
	}

	fancy := &console{}
	if got := fancy.groupMark(5, 3, 5); got != "✓✓ 5/5 delivered, 3/5 read" {
		t.Errorf("groupMark = %q", got)
	}
	if got := fancy.groupMark(5, 5, 5); got != "✓✓ 5/5 read" {
		t.Errorf("groupMark = %q", got)
	}
	if got := fancy.groupMark(2, 0, 5); got != "✓✓ 2/5 delivered" {
		t.Errorf("groupMark = %q", got)
	}
}

// TestReadMarkerSkipsReadElsewhere: messages read on another device get
// no READ from this one ([S-10-6]).
func TestReadMarkerSkipsReadElsewhere(t *testing.T) {
	r := newReadMarker(&console{})
	r.mark(9, 2, 100)
	r.readElsewhere(9, 2, 120)
	r.mark(9, 2, 110)
	r.mark(0, 2, 50) // 1:1 is another conversation
	if len(r.pending) != 1 || r.pending[readKey{0, 2}] != 50 {
		t.Errorf("pending %v", r.pending)
	}
}
