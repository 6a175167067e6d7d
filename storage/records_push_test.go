package storage

import (
	"encoding/hex"
	"testing"

	"github.com/parley-im/parley/protocol/pb"
)

// Golden bytes of the push records as the shard stores them. They must
// not change: databases hold them (a new field goes at the end).
const (
	goldenPushReg = "01" + // record version
		"01" + // provider PUSH_APNS
		"04" + "61623031" + // token "ab01"
		"01" // show_sender
	goldenPushDue = "01" + // record version
		"05" + // count
		"03" + // pushed
		"80c597e0ae33" + // next, Unix ms 1764896400000
		"8620" + // sender 4102
		"00" // group
)

func TestPushRecordsGolden(t *testing.T) {
	reg := pushReg{Provider: pb.PushProvider_PUSH_APNS, Token: "ab01", ShowSender: true}
	if got := hex.EncodeToString(reg.encode(nil)); got != goldenPushReg {
		t.Fatalf("registration:\ngot  %s\nwant %s", got, goldenPushReg)
	}
	b, _ := hex.DecodeString(goldenPushReg)
	var r pushReg
	if err := r.decode(b); err != nil || r != reg {
		t.Fatalf("decode registration: %+v, %v", r, err)
	}
	due := pushDue{Count: 5, Pushed: 3, NextMS: 1764896400000, Sender: 4102}
	if got := hex.EncodeToString(due.encode(nil)); got != goldenPushDue {
		t.Fatalf("due:\ngot  %s\nwant %s", got, goldenPushDue)
	}
	b, _ = hex.DecodeString(goldenPushDue)
	var d pushDue
	if err := d.decode(b); err != nil || d != due {
		t.Fatalf("decode due: %+v, %v", d, err)
	}
	if err := d.decode(b[:len(b)-1]); err == nil {
		t.Fatal("a truncated record decoded")
	}
}
