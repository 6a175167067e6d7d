package storage_test

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// fullOp returns an Op with every field set to a value that is not its
// zero, each different, by reflection, so that a field added to Op is set
// here without anyone remembering to. It fails on a field of a type it
// does not know: extend it, and the node op codec, for that field.
func fullOp(t *testing.T) storage.Op {
	t.Helper()
	var op storage.Op
	v := reflect.ValueOf(&op).Elem()
	n := uint64(0)
	next := func() uint64 { n++; return n }
	var fill func(name string, f reflect.Value)
	fill = func(name string, f reflect.Value) {
		switch f.Interface().(type) {
		case *pb.KeysPublish:
			f.Set(reflect.ValueOf(&pb.KeysPublish{Rid: uint32(next()), IdentityKey: []byte{byte(next())}, RegistrationId: uint32(next()),
				SignedPrekey: &pb.SignedPreKey{Id: uint32(next()), Key: []byte("k"), Signature: []byte("s")},
				Prekeys:      []*pb.PreKey{{Id: uint32(next()), Key: []byte("p")}}}))
			return
		case *storage.Envelopes:
			f.Set(reflect.ValueOf(&storage.Envelopes{
				To:  []*pb.Envelope{{Device: 1, Body: []byte("to 1"), Cipher: pb.Cipher_CIPHER_SIGNAL}, {Device: 2, Body: []byte("to 2")}},
				Own: []*pb.Envelope{{Device: 3, Body: []byte("own 3"), Cipher: pb.Cipher_CIPHER_SIGNAL_PREKEY}},
				// OwnChecked and OwnStale must travel as set: both true.
				OwnChecked: true, OwnStale: true, OwnDevices: []uint32{3, 4},
			}))
			return
		case *storage.PushOp:
			p := new(storage.PushOp)
			fill(name, reflect.ValueOf(p).Elem())
			f.Set(reflect.ValueOf(p))
			return
		}
		switch f.Kind() {
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			f.SetUint(next() % (1 << (8*f.Type().Size() - 1)))
		case reflect.Int32: // protobuf enums
			f.SetInt(int64(next()%3 + 1))
		case reflect.String:
			f.SetString(name + "-value")
		case reflect.Slice:
			s := reflect.MakeSlice(f.Type(), 2, 2)
			for i := range 2 {
				fill(name, s.Index(i))
			}
			f.Set(s)
		case reflect.Struct:
			for i := range f.NumField() {
				fill(name+"."+f.Type().Field(i).Name, f.Field(i))
			}
		default:
			t.Fatalf("Op field %s of type %v: fullOp does not know how to set it; extend fullOp and storage.EncodeOp/DecodeOp (protocol/node.proto)", name, f.Type())
		}
	}
	for i := range v.NumField() {
		fill(v.Type().Field(i).Name, v.Field(i))
	}
	return op
}

// equalOps compares two Ops field by field, protobuf messages with
// proto.Equal, and names the first field that differs.
func equalOps(a, b storage.Op) (string, bool) {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		name := va.Type().Field(i).Name
		fa, fb := va.Field(i).Interface(), vb.Field(i).Interface()
		switch x := fa.(type) {
		case proto.Message:
			if !proto.Equal(x, fb.(proto.Message)) {
				return name, false
			}
		case *storage.Envelopes:
			y := fb.(*storage.Envelopes)
			if (x == nil) != (y == nil) {
				return name, false
			}
			if x == nil {
				continue
			}
			if !equalEnvelopes(x.To, y.To) || !equalEnvelopes(x.Own, y.Own) || x.OwnChecked != y.OwnChecked ||
				x.OwnStale != y.OwnStale || !reflect.DeepEqual(x.OwnDevices, y.OwnDevices) {
				return name, false
			}
		default:
			if !reflect.DeepEqual(fa, fb) {
				return name, false
			}
		}
	}
	return "", true
}

func equalEnvelopes(a, b []*pb.Envelope) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// roundTrip encodes op as a node link would carry it: marshalled, then
// unmarshalled on the far side.
func roundTrip(t *testing.T, op *storage.Op) storage.Op {
	t.Helper()
	b, err := proto.Marshal(&pb.NodeFrame{Body: &pb.NodeFrame_Op{Op: storage.EncodeOp(op)}})
	if err != nil {
		t.Fatal(err)
	}
	var f pb.NodeFrame
	if err := proto.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	got, err := storage.DecodeOp(f.GetOp())
	if err != nil {
		t.Fatalf("decode kind %d: %v", op.Kind, err)
	}
	return got
}

// TestNodeOpRoundTrip: every kind of op, with every field of Op set (so
// every field any kind reads), crosses a node link unchanged; a field
// added to Op and not to the codec fails it.
func TestNodeOpRoundTrip(t *testing.T) {
	full := fullOp(t)
	kinds := 0
	for k := storage.OpKind(1); k < 255; k++ {
		op := full
		op.Kind = k
		if _, err := storage.DecodeOp(storage.EncodeOp(&op)); err != nil {
			continue // not a kind
		}
		kinds++
		got := roundTrip(t, &op)
		if name, ok := equalOps(op, got); !ok {
			t.Errorf("kind %d: field %s changed across the link: sent %+v, got %+v", k, name,
				reflect.ValueOf(op).FieldByName(name), reflect.ValueOf(got).FieldByName(name))
		}
	}
	if want := int(storage.OpConnGone) + 2; kinds != want { // and the two push kinds
		t.Fatalf("%d kinds round-tripped, want %d", kinds, want)
	}
	// The zero refs and nil messages stay zero and nil.
	op := storage.Op{Kind: storage.OpAck, User: 1}
	if got := roundTrip(t, &op); !reflect.DeepEqual(got, op) {
		t.Fatalf("sparse op %+v came back %+v", op, got)
	}
}

// TestNodeOpRefused: a node op of no kind, an unknown kind or an out of
// range shard is an error, not an Op.
func TestNodeOpRefused(t *testing.T) {
	for _, m := range []*pb.NodeOp{
		{},
		{Kind: 250},
		{Kind: uint32(storage.OpForward), Dest: storage.MaxShards},
		{Kind: uint32(storage.OpForward), Source: 1 << 20},
		{Kind: uint32(storage.OpSend), Flags: 1 << 9},
	} {
		if op, err := storage.DecodeOp(m); err == nil {
			t.Errorf("DecodeOp(%v) = %+v, want an error", m, op)
		}
	}
}

// TestNodeCallRoundTrip: every Endpoint method called on a RemoteEndpoint
// is made, with the same arguments, on the far node's endpoint.
func TestNodeCallRoundTrip(t *testing.T) {
	ref := storage.ConnRef{Node: 2, Gen: 9, ID: 1<<24 | 5}
	far := newEndpoint(t)
	var calls int
	remote := storage.RemoteEndpoint{Ref: ref, Send: func(c *pb.NodeCall) {
		b, err := proto.Marshal(&pb.NodeFrame{Body: &pb.NodeFrame_Call{Call: c}})
		if err != nil {
			t.Fatal(err)
		}
		var f pb.NodeFrame
		if err := proto.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		if got := storage.CallRef(f.GetCall()); got != ref {
			t.Fatalf("call for %+v, want %+v", got, ref)
		}
		if err := storage.ApplyCall(far, f.GetCall()); err != nil {
			t.Fatal(err)
		}
		calls++
	}}
	var ep storage.Endpoint = remote
	post, err := codec.AppendProto(nil, protocol.KindSent, &pb.Sent{Cmid: 7, Id: 8})
	if err != nil {
		t.Fatal(err)
	}
	if !ep.Post(post) {
		t.Fatal("Post reported false")
	}
	reply, err := codec.AppendProto(nil, protocol.KindOK, &pb.Ok{Rid: 6})
	if err != nil {
		t.Fatal(err)
	}
	ep.Reply(reply)
	if s := far.take(t, protocol.KindSent).(*pb.Sent); s.Cmid != 7 || s.Id != 8 {
		t.Fatalf("Post arrived as %v", s)
	}
	if ok := far.take(t, protocol.KindOK).(*pb.Ok); ok.Rid != 6 {
		t.Fatalf("Reply arrived as %v", ok)
	}
	sess := storage.Session{User: 1, Device: 2, Cursor: 3, Window: 4, MaxCMID: 5}
	ep.Authenticated(sess)
	far.wait(t, "session", func(e *endpoint) bool { return e.session != nil })
	if *far.session != sess {
		t.Fatalf("session %+v, want %+v", *far.session, sess)
	}
	ep.LookupPart(77, []*pb.Contact{{Phone: "+15550001", User: 9}})
	if r := far.take(t, protocol.KindLookupResult).(*pb.LookupResult); r.Rid != 77 || len(r.Contacts) != 1 || r.Contacts[0].User != 9 {
		t.Fatalf("lookup part arrived as %v", r)
	}
	ep.Fail(protocol.CodeAuthFailed)
	far.wait(t, "close", func(e *endpoint) bool { return e.isClosed })
	if far.closed != protocol.CodeAuthFailed {
		t.Fatalf("closed with %v", far.closed)
	}
	other := newEndpoint(t)
	if err := storage.ApplyCall(other, &pb.NodeCall{Method: pb.Method_METHOD_CLOSE, Code: protocol.CodeShuttingDown}); err != nil {
		t.Fatal(err)
	}
	if !other.isClosed || other.closed != protocol.CodeShuttingDown {
		t.Fatalf("Close arrived as %v", other.closed)
	}
	if err := storage.ApplyCall(other, &pb.NodeCall{Method: 99}); err == nil {
		t.Fatal("a call of an unknown method was applied")
	}
	if calls != 5 {
		t.Fatalf("%d calls, want 5", calls)
	}
}
