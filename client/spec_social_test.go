package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// These tests hold the client to the hex examples of spec.md section 7
// for groups, presence, typing, linked devices and media: the frames the
// client writes are the spec's bytes (with the client's request ids), and
// the spec's server frames have the effect section 7 describes.

// specExamples returns every hex example of spec.md by kind name ("SEND",
// "GROUP_INFO" …), in the order they appear.
func specExamples(t *testing.T) map[string][][]byte {
	t.Helper()
	b, err := os.ReadFile("../spec.md")
	if err != nil {
		t.Fatalf("read spec: %v", err)
	}
	lines := strings.Split(string(b), "\n")
	out := make(map[string][][]byte)
	for i := 0; i < len(lines); i++ {
		name, ok := strings.CutPrefix(lines[i], "<!-- frame: ")
		if !ok {
			continue
		}
		name = strings.Fields(strings.TrimSuffix(name, " -->"))[0]
		var raw []byte
		for i += 2; i < len(lines) && lines[i] != "```"; i++ {
			hexPart, _, _ := strings.Cut(lines[i], "  ")
			bs, err := hex.DecodeString(strings.ReplaceAll(hexPart, " ", ""))
			if err != nil {
				t.Fatalf("spec.md:%d: %v", i+1, err)
			}
			raw = append(raw, bs...)
		}
		out[name] = append(out[name], raw)
	}
	return out
}

// withRID returns the frame b with its body's rid field set to rid,
// re-encoded as the codec encodes.
func withRID(t *testing.T, b []byte, rid uint32) []byte {
	t.Helper()
	f, rest, err := codec.NextFrame(b, protocol.MaxFrameBody)
	if err != nil || len(rest) != 0 {
		t.Fatalf("spec frame: %v", err)
	}
	info, ok := f.Kind.Info()
	if !ok {
		t.Fatalf("spec frame of unknown kind %v", f.Kind)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName("parley.v1." + info.Message))
	if err != nil {
		t.Fatal(err)
	}
	m := mt.New()
	if err := proto.Unmarshal(f.Body, m.Interface()); err != nil {
		t.Fatal(err)
	}
	m.Set(m.Descriptor().Fields().ByName("rid"), protoreflect.ValueOfUint32(rid))
	out, err := codec.AppendProto(nil, f.Kind, m.Interface())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ridOf returns the rid of a request frame's body.
func ridOf(t *testing.T, f codec.Frame) uint32 {
	t.Helper()
	info, _ := f.Kind.Info()
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName("parley.v1." + info.Message))
	if err != nil {
		t.Fatal(err)
	}
	m := mt.New()
	if err := proto.Unmarshal(f.Body, m.Interface()); err != nil {
		t.Fatal(err)
	}
	return uint32(m.Get(m.Descriptor().Fields().ByName("rid")).Uint())
}

// TestSpecSection7Requests: each request is written as its spec example,
// and the spec's answer gives the result the example describes.
func TestSpecSection7Requests(t *testing.T) {
	ex := specExamples(t)
	srv := newFakeServer(t, false)
	c, fc := connected(t, srv, nil)
	ctx := context.Background()
	sum, _ := hex.DecodeString("69f2db1d68c99cc68904af6c06b1818cb78f212243a96f20b2d987faaf58116a")
	mediaID := MediaID{0x3f, 0x9a, 0x2c, 0x71, 0x0e, 0xd4, 0x88, 0xb5, 0x61, 0xc2, 0x07, 0xae, 0x93, 0x4d, 0x1b, 0xf0}

	for _, tt := range []struct {
		request string // the spec example of the frame the call writes: kind and index
		n       int
		answer  string // the spec example that answers it
		an      int
		call    func() (any, error)
		check   func(v any) bool
	}{
		{"GROUP_CREATE", 0, "GROUP_INFO", 0,
			func() (any, error) { return c.CreateGroup(ctx, "Saturday hike", nil, []uint64{4102, 4107, 8197}) },
			func(v any) bool {
				g := v.(GroupInfo)
				return g.ID == 12293 && g.GSeq == 2 && len(g.Members) == 3 && g.Members[1] == (GroupMember{4102, pb.GroupRole_ROLE_MEMBER, 2}) &&
					slices.Equal(g.Refused, []GroupRefusal{{8197, protocol.CodeTooManyGroups}})
			}},
		{"GROUP_UPDATE", 0, "OK", 0,
			func() (any, error) { return nil, c.PromoteGroupMembers(ctx, 12293, []uint64{4102}) }, nil},
		{"GROUP_GET", 0, "GROUP_INFO", 0,
			func() (any, error) { return c.Group(ctx, 12293) },
			func(v any) bool { return v.(GroupInfo).Name == "Saturday hike" }},
		{"GROUP_LIST", 0, "GROUP_LIST_RESULT", 0,
			func() (any, error) { return c.Groups(ctx) },
			func(v any) bool { return slices.Equal(v.([]uint64), []uint64{12293, 20485}) }},
		{"READ", 1, "OK", 0,
			func() (any, error) {
				return nil, c.MarkGroupRead(ctx, 12293, map[uint64]uint64{4102: 254310766008619009})
			}, nil},
		{"PRESENCE_SUBSCRIBE", 0, "OK", 0,
			func() (any, error) { return nil, c.Subscribe(ctx, []uint64{4102, 4107, 8197}) }, nil},
		{"SET_PRIVACY", 0, "OK", 0,
			func() (any, error) { return nil, c.SetPrivacy(ctx, pb.Visibility_VISIBILITY_CONTACTS) }, nil},
		{"LINK_APPROVE", 0, "OK", 0,
			func() (any, error) { return nil, c.ApproveLink(ctx, "7KQ2M9XH4TZC8RWB") }, nil},
		{"DEVICES", 0, "DEVICE_LIST", 0,
			func() (any, error) { return c.Devices(ctx) },
			func(v any) bool {
				d := v.([]DeviceInfo)
				return len(d) == 2 && d[0].Name == "Pixel 9" && d[0].Primary && d[1].ID == 3 && !d[1].Primary && d[1].Online &&
					d[1].Created.Equal(time.UnixMilli(1796322277150))
			}},
		{"REVOKE_DEVICE", 0, "OK", 0,
			func() (any, error) { return nil, c.RevokeDevice(ctx, 2) }, nil},
		{"MEDIA_UPLOAD", 0, "MEDIA_UPLOAD_SLOT", 0,
			func() (any, error) {
				return c.RequestUploadSlot(ctx, MediaUploadRequest{Type: pb.ContentType_CONTENT_IMAGE, Size: 245760, SHA256: [32]byte(sum)})
			},
			func(v any) bool {
				s := v.(MediaUploadSlot)
				return s.ID == mediaID && !s.Stored && strings.HasPrefix(s.URL, "https://media.example.com/media/v1/upload/") && s.TTL == 24*time.Hour
			}},
		{"MEDIA_DOWNLOAD", 0, "MEDIA_DOWNLOAD_URL", 0,
			func() (any, error) { return c.RequestDownloadURL(ctx, mediaID) },
			func(v any) bool {
				u := v.(MediaDownloadURL)
				return u.Size == 245760 && u.SHA256 == [32]byte(sum) && u.Type == pb.ContentType_CONTENT_IMAGE && u.TTL == time.Hour
			}},
	} {
		t.Run(tt.request, func(t *testing.T) {
			res := background(tt.call)
			f := fc.next()
			rid := ridOf(t, f)
			if got, want := wire(f), withRID(t, ex[tt.request][tt.n], rid); !bytes.Equal(got, want) {
				t.Fatalf("%v\n got % x\nspec % x", f.Kind, got, want)
			}
			fc.write(withRID(t, ex[tt.answer][tt.an], rid))
			v, err := wait(t, res)
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil && !tt.check(v) {
				t.Errorf("result %+v", v)
			}
		})
	}
}

// TestSpecSection7Sends: a group SEND and a TYPING are the spec's bytes.
func TestSpecSection7Sends(t *testing.T) {
	ex := specExamples(t)
	srv := newFakeServer(t, false)
	st := storeAt(t, 0)
	if err := st.AddOutgoing(Outgoing{CMID: 18, To: 1}); err != nil { // the 18th send…
		t.Fatal(err)
	}
	if err := st.RemoveOutgoing(18); err != nil { // …answered long ago
		t.Fatal(err)
	}
	c, fc := connected(t, srv, st)
	res := background(func() (Sent, error) {
		return c.SendGroup(context.Background(), 12293, []byte("Table for six at 8, booked under Alice."), pb.ContentType_CONTENT_TEXT)
	})
	if got := wire(fc.next()); !bytes.Equal(got, ex["SEND"][1]) {
		t.Fatalf("group SEND\n got % x\nspec % x", got, ex["SEND"][1])
	}
	fc.write(codec.AppendSent(nil, 19, 254310766008619009))
	if s, err := wait(t, res); err != nil || s.ID != 254310766008619009 {
		t.Fatalf("SendGroup = %+v, %v", s, err)
	}
	if err := c.GroupTyping(12293, pb.TypingState_TYPING_STARTED); err != nil {
		t.Fatal(err)
	}
	if got := wire(fc.next()); !bytes.Equal(got, ex["TYPING"][0]) {
		t.Fatalf("TYPING\n got % x\nspec % x", got, ex["TYPING"][0])
	}
}

// TestSpecSection7Entries: the spec's group message, copy, SELF_READ
// receipt, group event, coalesced receipts, presence and typing frames
// become the events section 7 describes.
func TestSpecSection7Entries(t *testing.T) {
	ex := specExamples(t)
	srv := newFakeServer(t, false)
	c := startClient(t, testConfig(srv), nil)
	fc := srv.accept(t)
	fc.login(128, 60, 57)
	waitFor[Connected](c)

	for _, f := range [][]byte{
		ex["GROUP_EVENT"][0], ex["MESSAGE"][1], ex["RECEIPTS"][0], ex["MESSAGE"][2], ex["RECEIPT"][1],
		ex["PRESENCE"][0], ex["IS_TYPING"][0],
	} {
		fc.write(f)
	}
	if ev := waitFor[GroupEvent](c); ev.Seq != 69 || ev.Group != 12293 || ev.GSeq != 3 || ev.Actor != 4101 ||
		ev.Op != pb.GroupOp_GROUP_OP_PROMOTE || !slices.Equal(ev.Members, []uint64{4102}) {
		t.Errorf("GROUP_EVENT: %+v", ev)
	}
	if m := waitFor[Message](c); m.Seq != 70 || m.Group != 12293 || m.GSeq != 4 || m.From != 4102 || string(m.Body) != "Who is bringing the map?" {
		t.Errorf("group MESSAGE: %+v", m)
	}
	if r := waitFor[Receipts](c); r.Seq != 72 || r.Group != 12293 || r.Type != pb.ReceiptType_RECEIPT_READ ||
		!slices.Equal(r.Items, []ReceiptItem{{4102, 254311411214209024}, {4107, 254311411214209024}}) {
		t.Errorf("RECEIPTS: %+v", r)
	}
	if m := waitFor[Message](c); m.Seq != 73 || m.To != 8197 || m.From != 4101 || m.FromDevice != 3 {
		t.Errorf("copy: %+v", m)
	}
	if r := waitFor[Receipt](c); r.Seq != 74 || r.Type != pb.ReceiptType_RECEIPT_SELF_READ || r.Peer != 4102 || r.UpTo != 251620913202600963 {
		t.Errorf("SELF_READ: %+v", r)
	}
	if p := waitFor[Presence](c); p.User != 4102 || p.Online || !p.LastSeen.Equal(time.UnixMilli(1796321873402)) {
		t.Errorf("PRESENCE: %+v", p)
	}
	if it := waitFor[IsTyping](c); it.From != 4102 || it.Group != 12293 || it.State != pb.TypingState_TYPING_STARTED {
		t.Errorf("IS_TYPING: %+v", it)
	}
	ackUntil(t, fc, 74)
}

// TestSpecSection7Link: the companion's LINK_REQUEST is the spec's, and
// the spec's LINK_CODE and LINKED give the code and the credentials.
func TestSpecSection7Link(t *testing.T) {
	ex := specExamples(t)
	srv := newFakeServer(t, false)
	pending := background(func() (*PendingLink, error) { return RequestLink(context.Background(), testConfig(srv), "iPad Air") })
	fc := srv.accept(t)
	if got := wire(fc.next()); !bytes.Equal(got, ex["LINK_REQUEST"][0]) {
		t.Fatalf("LINK_REQUEST\n got % x\nspec % x", got, ex["LINK_REQUEST"][0])
	}
	fc.write(ex["LINK_CODE"][0])
	l, err := wait(t, pending)
	if err != nil || l.Code != "7KQ2M9XH4TZC8RWB" || l.ExpiresIn != 2*time.Minute {
		t.Fatalf("RequestLink = %+v, %v", l, err)
	}
	fc.write(ex["LINKED"][0])
	creds, err := l.Wait(context.Background())
	if err != nil || creds.User != 4101 || creds.Device != 3 || creds.Secret[0] != 0xe0 {
		t.Fatalf("Wait = %+v, %v", creds, err)
	}
}
