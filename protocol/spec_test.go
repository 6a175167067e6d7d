package protocol_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// These tests hold spec.md to the code: its tables of error codes, frame
// kinds and constants, its hex examples, and its rule ids.
//
// A hex example in spec.md has this exact form (spec.md section 1.2):
//
//	<!-- frame: KIND -->            (or <!-- frame: BATCH compressed -->)
//	```
//	HH HH …  annotation             (hex bytes, two or more spaces, a note)
//	```
//	decodes to: `prototext`         (or: decodes to: (empty))
//
// For a BATCH, "decodes to:" stands alone and is followed by one line per
// inner frame: "- KIND `prototext`". The hex lines, annotations included,
// are exactly what renderFrame produces from the frame's bytes.
//
// The examples are independent test vectors ([S-1-3]): fixed bytes, which
// the test decodes and compares with "decodes to", then checks that the
// encoders reproduce. Nothing regenerates them from the encoders, so an
// encoder that changes its output fails here instead of changing the spec.

const specPath = "../spec.md"

func readSpec(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("read spec: %v", err)
	}
	return strings.Split(string(b), "\n")
}

// table returns the body rows of the Markdown table in lines whose header
// row has exactly the cells header. Cells are trimmed and stripped of
// backticks.
func table(t *testing.T, lines []string, header ...string) [][]string {
	t.Helper()
	for i, l := range lines {
		if !slices.Equal(cells(l), header) {
			continue
		}
		var rows [][]string
		for _, l := range lines[i+2:] {
			if !strings.HasPrefix(l, "|") {
				break
			}
			rows = append(rows, cells(l))
		}
		return rows
	}
	t.Fatalf("spec.md has no table with header %q", header)
	return nil
}

// cells splits a Markdown table row into trimmed cells without backticks.
func cells(row string) []string {
	row = strings.TrimSpace(row)
	if !strings.HasPrefix(row, "|") || !strings.HasSuffix(row, "|") || len(row) < 2 {
		return nil
	}
	parts := strings.Split(row[1:len(row)-1], "|")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(strings.ReplaceAll(p, "`", ""))
	}
	return parts
}

func TestSpecErrorTable(t *testing.T) {
	rows := table(t, readSpec(t), "Code", "Name", "Scope", "Client action")
	if len(rows) != len(protocol.Codes) {
		t.Errorf("spec error table has %d rows, want %d (protocol.Codes)", len(rows), len(protocol.Codes))
	}
	for i, c := range protocol.Codes {
		want := []string{strconv.Itoa(int(c.Code)), c.Name, c.Scope.String(), c.Action}
		if i >= len(rows) {
			t.Errorf("spec error table: missing row %q", want)
			continue
		}
		if got := rows[i]; !slices.Equal(got, want) {
			t.Errorf("spec error table row %d:\ngot  %q\nwant %q", i+1, got, want)
		}
	}
	for i := len(protocol.Codes); i < len(rows); i++ {
		t.Errorf("spec error table: extra row %q", rows[i])
	}

	// protocol.Codes against the ErrorCode enum of parley.proto, and the
	// scope rule of [S-11-2].
	if got, want := len(protocol.Codes), len(pb.ErrorCode_name)-1; got != want {
		t.Errorf("protocol.Codes has %d codes, parley.proto ErrorCode %d", got, want)
	}
	for _, c := range protocol.Codes {
		if got, want := pb.ErrorCode_name[int32(c.Code)], "ERROR_"+c.Name; got != want {
			t.Errorf("code %d: parley.proto name %q, want %q", c.Code, got, want)
		}
		if got := protocol.ScopeOf(c.Code); got != c.Scope {
			t.Errorf("code %d %s: ScopeOf = %v, want %v ([S-11-2])", c.Code, c.Name, got, c.Scope)
		}
	}
}

// states renders a KindInfo.States value as spec.md writes it.
func states(s protocol.State) string {
	var names []string
	if s&protocol.StateOpen != 0 {
		names = append(names, "OPEN")
	}
	if s&protocol.StateAuthenticated != 0 {
		names = append(names, "AUTHENTICATED")
	}
	if len(names) == 0 {
		return "—"
	}
	return strings.Join(names, ", ")
}

func TestSpecKindTable(t *testing.T) {
	rows := table(t, readSpec(t), "Kind", "Name", "Body", "Direction", "Allowed in", "Inbox entry")
	if len(rows) != len(protocol.Kinds) {
		t.Errorf("spec kind table has %d rows, want %d (protocol.Kinds)", len(rows), len(protocol.Kinds))
	}
	for i, k := range protocol.Kinds {
		body, entry := k.Message, "no"
		if body == "" {
			body = "—"
		}
		if k.Entry {
			entry = "yes"
		}
		want := []string{strconv.Itoa(int(k.Kind)), k.Name, body, k.Direction.String(), states(k.States), entry}
		if i >= len(rows) {
			t.Errorf("spec kind table: missing row %q", want)
			continue
		}
		if got := rows[i]; !slices.Equal(got, want) {
			t.Errorf("spec kind table row %d:\ngot  %q\nwant %q", i+1, got, want)
		}
	}
	for i := len(protocol.Kinds); i < len(rows); i++ {
		t.Errorf("spec kind table: extra row %q", rows[i])
	}

	// protocol.Kinds against the Kind enum and messages of parley.proto,
	// and the direction ranges of [S-3-4].
	if got, want := len(protocol.Kinds), len(pb.Kind_name)-1; got != want {
		t.Errorf("protocol.Kinds has %d kinds, parley.proto Kind %d", got, want)
	}
	for _, k := range protocol.Kinds {
		if got, want := pb.Kind_name[int32(k.Kind)], "KIND_"+k.Name; got != want {
			t.Errorf("kind %d: parley.proto name %q, want %q", k.Kind, got, want)
		}
		if k.Message != "" {
			if _, err := messageType(k.Kind); err != nil {
				t.Errorf("kind %s: %v", k.Name, err)
			}
		}
		var want protocol.Direction = protocol.ClientToServer
		if k.Kind >= 64 {
			want = protocol.ServerToClient
		}
		if k.Kind == 0 || k.Kind > 127 || k.Direction != want {
			t.Errorf("kind %d %s: direction %v, want %v ([S-3-4])", k.Kind, k.Name, k.Direction, want)
		}
		if (k.Direction == protocol.ClientToServer) != (k.States != 0) {
			t.Errorf("kind %d %s: allowed states %v for direction %v", k.Kind, k.Name, states(k.States), k.Direction)
		}
	}
}

// constants are the values of the constants declared in limits.go.
var constants = map[string]int64{
	"Version":                  protocol.Version,
	"MaxFrameBody":             protocol.MaxFrameBody,
	"MaxClientFrameBody":       protocol.MaxClientFrameBody,
	"MaxMessageBody":           protocol.MaxMessageBody,
	"LazyAckMaxBody":           protocol.LazyAckMaxBody,
	"MaxHeaderLen":             protocol.MaxHeaderLen,
	"MaxLookupPhones":          protocol.MaxLookupPhones,
	"MaxDeviceName":            protocol.MaxDeviceName,
	"CredentialLen":            protocol.CredentialLen,
	"MaxGroupMembers":          protocol.MaxGroupMembers,
	"MaxGroupsPerUser":         protocol.MaxGroupsPerUser,
	"MaxGroupName":             protocol.MaxGroupName,
	"MaxAvatar":                protocol.MaxAvatar,
	"MaxCompanions":            protocol.MaxCompanions,
	"MaxPresenceSubscriptions": protocol.MaxPresenceSubscriptions,
	"LinkCodeLen":              protocol.LinkCodeLen,
	"MinCompress":              protocol.MinCompress,
	"MessageIDEpochMS":         protocol.MessageIDEpochMS,
	"MessageIDTimeShift":       protocol.MessageIDTimeShift,
	"MaxMediaImage":            protocol.MaxMediaImage,
	"MaxMediaVideo":            protocol.MaxMediaVideo,
	"MaxMediaVoice":            protocol.MaxMediaVoice,
	"MaxMediaDocument":         protocol.MaxMediaDocument,
	"MediaIDLen":               protocol.MediaIDLen,
	"MaxBlocks":                protocol.MaxBlocks,
	"MaxTimer":                 protocol.MaxTimer,
	"MaxReportMessages":        protocol.MaxReportMessages,
	"MaxReportReason":          protocol.MaxReportReason,
	"MaxPushToken":             protocol.MaxPushToken,
	"KeyLen":                   protocol.KeyLen,
	"SignatureLen":             protocol.SignatureLen,
	"MaxPreKeysPerPublish":     protocol.MaxPreKeysPerPublish,
	"MaxPreKeys":               protocol.MaxPreKeys,
	"PreKeysLow":               protocol.PreKeysLow,
}

func TestSpecLimits(t *testing.T) {
	// Every exported constant of limits.go must be in the map above, so a
	// new limit cannot miss the spec.
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "limits.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	for _, d := range f.Decls {
		if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.CONST {
			for _, s := range g.Specs {
				for _, n := range s.(*ast.ValueSpec).Names {
					if n.IsExported() {
						declared = append(declared, n.Name)
					}
				}
			}
		}
	}
	for _, n := range declared {
		if _, ok := constants[n]; !ok {
			t.Errorf("limits.go declares %s, which this test and spec.md's constants table do not list", n)
		}
	}

	rows := table(t, readSpec(t), "Constant", "Value", "Unit", "Meaning")
	seen := map[string]bool{}
	for _, r := range rows {
		name := r[0]
		want, ok := constants[name]
		if !ok {
			t.Errorf("spec constants table lists %q, which limits.go does not declare", name)
			continue
		}
		if seen[name] {
			t.Errorf("spec constants table lists %s twice", name)
		}
		seen[name] = true
		got, err := strconv.ParseInt(r[1], 10, 64)
		if err != nil || got != want {
			t.Errorf("spec constants table: %s = %q, want %d", name, r[1], want)
		}
	}
	for _, n := range declared {
		if !seen[n] {
			t.Errorf("spec constants table lacks %s = %d", n, constants[n])
		}
	}
}

var (
	markerRe   = regexp.MustCompile(`^<!-- frame: ([A-Z_]+)( compressed)? -->$`)
	hexLineRe  = regexp.MustCompile(`^([0-9a-f]{2}(?: [0-9a-f]{2})*)(?:  +(.*))?$`)
	decodesRe  = regexp.MustCompile("^decodes to: (?:`([^`]*)`|(\\(empty\\)))$")
	innerRe    = regexp.MustCompile("^- ([A-Z_]+) (?:`([^`]*)`|(\\(empty\\)))$")
	headingRe  = regexp.MustCompile(`^## (\d+)\. \S`)
	frameSecRe = regexp.MustCompile(`^### 7\.\d+ ([A-Z_]+) \((\d+)\)$`)
)

// example is one hex example of spec.md.
type example struct {
	line       int // 1-based line of the marker
	kind       protocol.Kind
	compressed bool
	section    string   // the §7 frame subsection it is in, "" elsewhere
	start, end int      // the hex lines are lines[start:end]
	hex        []string // lines[start:end]
	decoded    []decoded
}

// decoded is one "decodes to" entry: the message of a frame, or of one
// frame inside a BATCH.
type decoded struct {
	kind protocol.Kind
	msg  proto.Message
}

func kindByName(name string) (protocol.Kind, bool) {
	for _, k := range protocol.Kinds {
		if k.Name == name {
			return k.Kind, true
		}
	}
	return 0, false
}

// messageType returns the generated message type of kind k's body.
func messageType(k protocol.Kind) (protoreflect.MessageType, error) {
	info, ok := k.Info()
	if !ok || info.Message == "" {
		return nil, fmt.Errorf("kind %v has no message body", k)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName("parley.v1." + info.Message))
	if err != nil {
		return nil, fmt.Errorf("kind %v: message %s: %v", k, info.Message, err)
	}
	return mt, nil
}

// parseDecoded turns the prototext of a "decodes to" entry into a message
// of kind k's type. empty says the entry was "(empty)".
func parseDecoded(k protocol.Kind, text string, empty bool) (proto.Message, error) {
	mt, err := messageType(k)
	if err != nil {
		return nil, err
	}
	m := mt.New().Interface()
	if empty {
		return m, nil
	}
	if text == "" {
		return nil, fmt.Errorf("empty prototext: write (empty)")
	}
	if err := prototext.Unmarshal([]byte(text), m); err != nil {
		return nil, fmt.Errorf("prototext %q: %v", text, err)
	}
	return m, nil
}

// parseExamples finds every hex example in lines.
func parseExamples(t *testing.T, lines []string) []example {
	t.Helper()
	var exs []example
	section := ""
	for i := 0; i < len(lines); i++ {
		if m := frameSecRe.FindStringSubmatch(lines[i]); m != nil {
			section = m[1]
		} else if strings.HasPrefix(lines[i], "## ") || strings.HasPrefix(lines[i], "### ") {
			section = ""
		}
		m := markerRe.FindStringSubmatch(lines[i])
		if m == nil {
			if strings.HasPrefix(lines[i], "<!-- frame") {
				t.Errorf("spec.md:%d: malformed example marker %q", i+1, lines[i])
			}
			continue
		}
		ex := example{line: i + 1, compressed: m[2] != "", section: section}
		k, ok := kindByName(m[1])
		if !ok {
			t.Errorf("spec.md:%d: example of unknown kind %q", i+1, m[1])
			continue
		}
		ex.kind = k
		if ex.compressed && k != protocol.KindBatch {
			t.Errorf("spec.md:%d: only a BATCH example may be compressed ([S-3-6])", i+1)
			continue
		}
		if i+1 >= len(lines) || lines[i+1] != "```" {
			t.Errorf("spec.md:%d: example marker not followed by ```", i+1)
			continue
		}
		ex.start = i + 2
		j := ex.start
		for j < len(lines) && lines[j] != "```" {
			j++
		}
		if j == len(lines) {
			t.Errorf("spec.md:%d: unterminated hex block", i+1)
			return exs
		}
		ex.end = j
		ex.hex = lines[ex.start:ex.end]
		j++
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		bad := func(format string, args ...any) {
			t.Errorf("spec.md:%d: example at line %d: %s", j+1, ex.line, fmt.Sprintf(format, args...))
		}
		switch {
		case j < len(lines) && lines[j] == "decodes to:":
			if k != protocol.KindBatch {
				bad("a list of decoded frames is for BATCH only")
				continue
			}
			for j++; j < len(lines); j++ {
				im := innerRe.FindStringSubmatch(lines[j])
				if im == nil {
					break
				}
				ik, ok := kindByName(im[1])
				if !ok {
					bad("unknown inner kind %q", im[1])
					break
				}
				msg, err := parseDecoded(ik, im[2], im[3] != "")
				if err != nil {
					bad("%v", err)
					break
				}
				ex.decoded = append(ex.decoded, decoded{ik, msg})
			}
			if len(ex.decoded) == 0 {
				bad("BATCH example lists no inner frames")
				continue
			}
		case j < len(lines) && decodesRe.MatchString(lines[j]):
			if k == protocol.KindBatch {
				bad("a BATCH example lists its inner frames after a bare \"decodes to:\"")
				continue
			}
			dm := decodesRe.FindStringSubmatch(lines[j])
			msg, err := parseDecoded(k, dm[1], dm[2] != "")
			if err != nil {
				bad("%v", err)
				continue
			}
			ex.decoded = []decoded{{k, msg}}
		default:
			bad("hex block not followed by a \"decodes to\" line")
			continue
		}
		exs = append(exs, ex)
		i = j - 1
	}
	return exs
}

// hexBytes parses the hex column of an example's lines.
func hexBytes(lines []string) ([]byte, error) {
	var b []byte
	for _, l := range lines {
		m := hexLineRe.FindStringSubmatch(l)
		if m == nil {
			return nil, fmt.Errorf("not a hex line: %q", l)
		}
		for _, h := range strings.Fields(m[1]) {
			v, err := hex.DecodeString(h)
			if err != nil {
				return nil, err
			}
			b = append(b, v...)
		}
	}
	return b, nil
}

func newDecompressor(t *testing.T) *codec.Decompressor {
	t.Helper()
	d, err := codec.NewDecompressor(protocol.MaxFrameBody)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// encode builds an example's frame from its decoded messages with the
// real encoders.
func encode(t *testing.T, ex example) []byte {
	t.Helper()
	var body []byte
	for _, d := range ex.decoded {
		fr, err := codec.AppendProto(nil, d.kind, d.msg)
		if err != nil {
			t.Fatal(err)
		}
		if ex.kind != protocol.KindBatch {
			return fr
		}
		body = append(body, fr...)
	}
	if !ex.compressed {
		return codec.AppendFrame(nil, protocol.KindBatch, body)
	}
	c, err := codec.NewCompressor()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fr, _ := c.AppendFrame(nil, nil, protocol.KindBatch, body)
	if f, _, _, _ := codec.Parse(fr, protocol.MaxFrameBody); !f.Compressed {
		t.Fatalf("spec.md:%d: the compressor does not compress this %d-byte batch: make it longer or more repetitive", ex.line, len(body))
	}
	return fr
}

func TestSpecExamples(t *testing.T) {
	lines := readSpec(t)
	exs := parseExamples(t, lines)

	// Every frame kind has a subsection in section 7 with an example of it.
	covered := map[string]bool{}
	for _, ex := range exs {
		if ex.section != "" && ex.section == ex.kind.String() {
			covered[ex.section] = true
		}
	}
	for _, k := range protocol.Kinds {
		if !covered[k.Name] {
			t.Errorf("spec.md section 7 has no subsection \"### 7.n %s (%d)\" with an example of it", k.Name, k.Kind)
		}
	}
	for i, l := range lines {
		if m := frameSecRe.FindStringSubmatch(l); m != nil {
			if k, ok := kindByName(m[1]); !ok || strconv.Itoa(int(k)) != m[2] {
				t.Errorf("spec.md:%d: heading %q names no kind of protocol.Kinds", i+1, l)
			}
		}
	}

	for _, ex := range exs {
		t.Run(fmt.Sprintf("line%d_%v", ex.line, ex.kind), func(t *testing.T) {
			checkExample(t, ex, newDecompressor(t))
		})
	}
}

// checkExample checks one hex example against the codec and the generated
// code.
func checkExample(t *testing.T, ex example, dec *codec.Decompressor) {
	b, err := hexBytes(ex.hex)
	if err != nil {
		t.Fatalf("spec.md:%d: %v", ex.line, err)
	}
	f, n, _, err := codec.Parse(b, protocol.MaxFrameBody)
	if err != nil || n != len(b) {
		t.Fatalf("spec.md:%d: codec.Parse(% x) = n %d, err %v; want exactly one frame of %d bytes", ex.line, b, n, err, len(b))
	}
	if f.Kind != ex.kind || f.Compressed != ex.compressed {
		t.Fatalf("spec.md:%d: frame kind %v compressed %v, want %v compressed %v", ex.line, f.Kind, f.Compressed, ex.kind, ex.compressed)
	}
	if info, _ := ex.kind.Info(); info.Direction == protocol.ClientToServer {
		if _, _, _, err := codec.Parse(b, protocol.MaxClientFrameBody); err != nil {
			t.Errorf("spec.md:%d: client frame over MaxClientFrameBody: %v", ex.line, err)
		}
	}

	want, err := renderFrame(b, dec)
	if err != nil {
		t.Fatalf("spec.md:%d: %v", ex.line, err)
	}
	if !slices.Equal(ex.hex, want) {
		t.Errorf("spec.md:%d: the annotations of the hex block differ from what its bytes say (fix the annotations, not the bytes)\ngot:\n%s\nwant:\n%s",
			ex.line, strings.Join(ex.hex, "\n"), strings.Join(want, "\n"))
	}

	if ex.kind != protocol.KindBatch {
		checkBody(t, ex.line, ex.kind, f.Body, ex.decoded[0].msg)
		if re := encode(t, ex); !bytes.Equal(re, b) {
			t.Errorf("spec.md:%d: re-encoding the decoded message:\ngot  % x\nwant % x", ex.line, re, b)
		}
		return
	}

	body := f.Body
	if f.Compressed {
		z := len(body)
		body, err = dec.Decompress(nil, body)
		if err != nil {
			t.Fatalf("spec.md:%d: decompress: %v", ex.line, err)
		}
		if len(body) < protocol.MinCompress || z > len(body)-len(body)/8 {
			t.Errorf("spec.md:%d: compressed %d bytes to %d, which the server would not send compressed ([S-3-6])", ex.line, len(body), z)
		}
	}
	var re []byte
	i := 0
	for rest := body; len(rest) > 0; i++ {
		inner, r, err := codec.NextFrame(rest, protocol.MaxFrameBody)
		if err != nil {
			t.Fatalf("spec.md:%d: inner frame %d: %v", ex.line, i+1, err)
		}
		rest = r
		if i >= len(ex.decoded) {
			t.Errorf("spec.md:%d: inner frame %d (%v) is not listed after \"decodes to:\"", ex.line, i+1, inner.Kind)
			continue
		}
		d := ex.decoded[i]
		if inner.Kind != d.kind {
			t.Errorf("spec.md:%d: inner frame %d is %v, want %v", ex.line, i+1, inner.Kind, d.kind)
			continue
		}
		checkBody(t, ex.line, inner.Kind, inner.Body, d.msg)
		fr, err := codec.AppendProto(nil, d.kind, d.msg)
		if err != nil {
			t.Fatal(err)
		}
		re = append(re, fr...)
	}
	if i != len(ex.decoded) {
		t.Errorf("spec.md:%d: batch holds %d frames, \"decodes to:\" lists %d", ex.line, i, len(ex.decoded))
	}
	if !bytes.Equal(re, body) {
		t.Errorf("spec.md:%d: re-encoding the inner frames:\ngot  % x\nwant % x", ex.line, re, body)
	}
}

// checkBody decodes body as kind k's message with the generated code and
// with codec's hand-written decoders, compares both with want, and
// checks codec's hand-written encoders reproduce the frame.
func checkBody(t *testing.T, line int, k protocol.Kind, body []byte, want proto.Message) {
	t.Helper()
	mt, err := messageType(k)
	if err != nil {
		t.Fatal(err)
	}
	got := mt.New().Interface()
	if err := codec.ParseProto(body, got); err != nil {
		t.Errorf("spec.md:%d: %v body: %v", line, k, err)
		return
	}
	if !proto.Equal(got, want) {
		t.Errorf("spec.md:%d: %v body decodes to\n%v\nwant (decodes to)\n%v", line, k, got, want)
	}

	frame, err := codec.AppendProto(nil, k, want)
	if err != nil {
		t.Fatal(err)
	}
	var hand []byte
	var handDecoded any
	var wantDecoded any
	switch m := want.(type) {
	case *pb.Send:
		cs := codec.Send{To: m.To, CMID: m.Cmid, Body: m.Body, Type: m.Type, Group: m.Group, Cipher: m.Cipher, Forwarded: m.Forwarded, Ref: m.Ref}
		hand = codec.AppendSend(nil, cs)
		handDecoded, err = codec.ParseSend(body)
		if len(m.Envelopes)+len(m.Own) > 0 {
			// Envelopes have no hand-written encoder: ParseSend only says
			// they are there ([S-17-8]).
			hand, cs.Envelopes = frame, true
		}
		wantDecoded = cs
	case *pb.Ack:
		hand = codec.AppendAck(nil, m.Seq)
		handDecoded, err = codec.ParseAck(body)
		wantDecoded = m.Seq
	case *pb.Sent:
		hand = codec.AppendSent(nil, m.Cmid, m.Id)
		if m.Id == 0 {
			// The compact example follows the full one on its connection
			// ([S-7-16]): decode against it and encode back.
			st := codec.SentState{CMID: 18, ID: 251621645570022403}
			var cmid, id uint64
			if cmid, id, err = st.ParseSent(body); err == nil {
				st = codec.SentState{CMID: 18, ID: 251621645570022403}
				hand = st.AppendSent(nil, cmid, id)
			}
			handDecoded, wantDecoded = [2]uint64{cmid, id}, [2]uint64{19, 251621649764326403}
		}
	case *pb.Message:
		cm := codec.Message{ID: m.Id, From: m.From, Body: m.Body, Type: m.Type, FromDevice: m.FromDevice,
			Group: m.Group, GSeq: m.Gseq, To: m.To, Cipher: m.Cipher, TTL: m.TtlS, Forwarded: m.Forwarded, Ref: m.Ref}
		hand = codec.AppendEntry(nil, protocol.KindMessage, m.Seq, codec.AppendMessageEntry(nil, cm))
		handDecoded, err = codec.ParseMessage(body)
		cm.Seq = m.Seq
		wantDecoded = cm
	case *pb.Receipt:
		cr := codec.Receipt{Peer: m.Peer, Type: m.Type, UpTo: m.UpTo, Group: m.Group}
		hand = codec.AppendEntry(nil, protocol.KindReceipt, m.Seq, codec.AppendReceiptEntry(nil, cr))
		handDecoded, err = codec.ParseReceipt(body)
		cr.Seq = m.Seq
		wantDecoded = cr
	case *pb.Error:
		hand = codec.AppendError(nil, m.Code, m.Rid, m.Cmid, m.Message, m.RetryAfterMs)
		if len(m.Devices) > 0 {
			hand = frame // DEVICES_CHANGED goes through AppendProto
		}
	case *pb.Synced:
		hand = codec.AppendSynced(nil, m.Seq)
	case *pb.Ok:
		hand = codec.AppendOK(nil, m.Rid)
	default:
		return
	}
	if !bytes.Equal(hand, frame) {
		t.Errorf("spec.md:%d: codec's %v encoder:\ngot  % x\nwant % x", line, k, hand, frame)
	}
	if err != nil {
		t.Errorf("spec.md:%d: codec's %v decoder: %v", line, k, err)
	} else if handDecoded != nil && fmt.Sprint(handDecoded) != fmt.Sprint(wantDecoded) {
		t.Errorf("spec.md:%d: codec's %v decoder:\ngot  %+v\nwant %+v", line, k, handDecoded, wantDecoded)
	}
}

// hexLine is one line of a rendered hex block: bytes and what they mean.
type hexLine struct {
	b    []byte
	note string
}

// renderFrame renders frame as the lines of a spec.md hex block: the
// bytes in lowercase hex, then, aligned two spaces after the widest hex
// column, what they mean. Strings and bytes are shown 8 bytes a line, a
// zstd body 16.
func renderFrame(frame []byte, dec *codec.Decompressor) ([]string, error) {
	hl, err := frameLines(frame, "", dec)
	if err != nil {
		return nil, err
	}
	width := 0
	for _, l := range hl {
		width = max(width, 3*len(l.b)-1)
	}
	out := make([]string, len(hl))
	for i, l := range hl {
		h := fmt.Sprintf("% x", l.b)
		if l.note == "" {
			out[i] = h
		} else {
			out[i] = h + strings.Repeat(" ", width-len(h)+2) + l.note
		}
	}
	return out, nil
}

// frameLines renders the one frame that is all of b. prefix starts the
// notes of the header lines ("frame 2 " inside a batch).
func frameLines(b []byte, prefix string, dec *codec.Decompressor) ([]hexLine, error) {
	f, n, _, err := codec.Parse(b, protocol.MaxFrameBody)
	if err != nil || n != len(b) {
		return nil, fmt.Errorf("not exactly one frame (n %d of %d): %v", n, len(b), err)
	}
	h := n - len(f.Body)
	kind := fmt.Sprintf("%skind: %v (%d)", prefix, f.Kind, f.Kind)
	if f.Compressed {
		kind += ", compressed (0x80)"
	}
	lines := []hexLine{
		{b[:h-1], fmt.Sprintf("%sbody length: %d", prefix, len(f.Body))},
		{b[h-1 : h], kind},
	}
	switch {
	case f.Compressed:
		raw, err := dec.Decompress(nil, f.Body)
		if err != nil {
			return nil, err
		}
		for i, c := range chunks(f.Body, 16) {
			note := ""
			if i == 0 {
				note = fmt.Sprintf("zstd frame, inflates to %d bytes", len(raw))
			}
			lines = append(lines, hexLine{c, note})
		}
	case f.Kind == protocol.KindBatch:
		for i, rest := 1, f.Body; len(rest) > 0; i++ {
			inner, r, err := codec.NextFrame(rest, protocol.MaxFrameBody)
			if err != nil {
				return nil, err
			}
			il, err := frameLines(rest[:len(rest)-len(r)], fmt.Sprintf("frame %d ", i), dec)
			if err != nil {
				return nil, fmt.Errorf("inner frame %d (%v): %w", i, inner.Kind, err)
			}
			lines = append(lines, il...)
			rest = r
		}
	default:
		mt, err := messageType(f.Kind)
		if err != nil {
			return nil, err
		}
		fl, err := fieldLines(mt.Descriptor(), f.Body, "")
		if err != nil {
			return nil, fmt.Errorf("%v body: %w", f.Kind, err)
		}
		lines = append(lines, fl...)
	}
	return lines, nil
}

// fieldLines renders the fields of protobuf message b of type md, notes
// indented by indent.
func fieldLines(md protoreflect.MessageDescriptor, b []byte, indent string) ([]hexLine, error) {
	var lines []hexLine
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		fd := md.Fields().ByNumber(num)
		name := "unknown"
		if fd != nil {
			name = string(fd.Name())
		}
		head := fmt.Sprintf("%sfield %d (%s)", indent, num, name)
		switch typ {
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b[n:])
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			note := fmt.Sprintf("%s, varint: %d", head, v)
			if fd != nil && (fd.Kind() == protoreflect.Sint64Kind || fd.Kind() == protoreflect.Sint32Kind) {
				note = fmt.Sprintf("%s, zigzag varint: %d", head, protowire.DecodeZigZag(v))
			}
			if fd != nil && fd.Kind() == protoreflect.EnumKind {
				if ev := fd.Enum().Values().ByNumber(protoreflect.EnumNumber(int32(v))); ev != nil {
					note += " = " + string(ev.Name())
				}
			}
			lines = append(lines, hexLine{b[:n+m], note})
			b = b[n+m:]
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b[n:])
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			hdr := n + m - len(v)
			note := fmt.Sprintf("%s, %d bytes", head, len(v))
			if fd != nil && fd.Kind() == protoreflect.MessageKind {
				lines = append(lines, hexLine{b[:hdr], note + ": " + string(fd.Message().Name())})
				sub, err := fieldLines(fd.Message(), v, indent+"  ")
				if err != nil {
					return nil, err
				}
				lines = append(lines, sub...)
			} else {
				lines = append(lines, hexLine{b[:hdr], note})
				for _, c := range chunks(v, 8) {
					if q := printable(c); q != "" {
						lines = append(lines, hexLine{c, indent + q})
					} else {
						lines = append(lines, hexLine{c, ""})
					}
				}
			}
			b = b[n+m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b[n:])
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			lines = append(lines, hexLine{b[:n+m], fmt.Sprintf("%s, wire type %d", head, typ)})
			b = b[n+m:]
		}
	}
	return lines, nil
}

func chunks(b []byte, size int) [][]byte {
	var out [][]byte
	for len(b) > size {
		out = append(out, b[:size])
		b = b[size:]
	}
	if len(b) > 0 {
		out = append(out, b)
	}
	return out
}

// printable returns b as a quoted string if it is printable ASCII, else "".
func printable(b []byte) string {
	for _, c := range b {
		if c < 0x20 || c > 0x7e || c == '`' {
			return ""
		}
	}
	return strconv.Quote(string(b))
}

var (
	ruleRe    = regexp.MustCompile(`\[S-(\d+)-(\d+)\]`)
	ruleDefRe = regexp.MustCompile(`^\s*(?:[-*] |\d+\. )?\*\*\[S-(\d+)-(\d+)\]\*\*`)
)

// TestSpecRules checks the rule ids of spec.md: each is defined once, in
// the section its number names; the sections are numbered 1, 2, 3 …; and
// every rule id cited in spec.md or in the repository's Go and proto files
// is defined.
func TestSpecRules(t *testing.T) {
	lines := readSpec(t)
	defined := map[string]int{} // rule id → line
	section := 0
	for i, l := range lines {
		if m := headingRe.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			if n != section+1 {
				t.Errorf("spec.md:%d: section %d follows section %d", i+1, n, section)
			}
			section = n
		}
		m := ruleDefRe.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		id := fmt.Sprintf("[S-%s-%s]", m[1], m[2])
		if prev, ok := defined[id]; ok {
			t.Errorf("spec.md:%d: %s defined again (first at line %d)", i+1, id, prev)
			continue
		}
		defined[id] = i + 1
		if m[1] != strconv.Itoa(section) {
			t.Errorf("spec.md:%d: %s defined in section %d", i+1, id, section)
		}
	}
	if len(defined) == 0 {
		t.Fatal("spec.md defines no rules")
	}
	for i, l := range lines {
		for _, id := range ruleRe.FindAllString(l, -1) {
			if _, ok := defined[id]; !ok {
				t.Errorf("spec.md:%d: cites %s, which spec.md does not define", i+1, id)
			}
		}
	}

	root := ".."
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(path); ext != ".go" && ext != ".proto" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, l := range strings.Split(string(b), "\n") {
			for _, id := range ruleRe.FindAllString(l, -1) {
				if _, ok := defined[id]; !ok {
					t.Errorf("%s:%d: cites %s, which spec.md does not define", path, i+1, id)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// internalProtos are the .proto files of messages between nodes, which
// clients never see: docs/cluster.md describes them, spec.md does not.
var internalProtos = map[string]bool{"node.proto": true}

// TestSpecProtoFiles: spec.md's opening paragraph and its section 7 name
// every protobuf file of the protocol, and none of the internal ones.
func TestSpecProtoFiles(t *testing.T) {
	files, err := filepath.Glob("*.proto")
	if err != nil || len(files) == 0 {
		t.Fatalf("no .proto files: %v", err)
	}
	text := strings.Join(readSpec(t), "\n")
	opening, _, _ := strings.Cut(text, "## 1.")
	_, sec7, _ := strings.Cut(text, "## 7. Frames")
	sec7, _, _ = strings.Cut(sec7, "\n## 8.")
	for _, f := range files {
		if internalProtos[f] {
			if strings.Contains(text, f) {
				t.Errorf("spec.md names %s, which is internal (docs/cluster.md)", f)
			}
			continue
		}
		if !strings.Contains(opening, "`"+f+"`") {
			t.Errorf("spec.md's opening paragraph does not name %s", f)
		}
		if !strings.Contains(sec7, f) {
			t.Errorf("spec.md section 7 does not name %s among the files of the bodies", f)
		}
	}
}

// TestSpecProtoComments: the comments of the .proto messages whose
// behaviour spec.md settles cite the rules that settle it, so a reader of
// the .proto alone is sent to them, and TestSpecRules checks the ids.
func TestSpecProtoComments(t *testing.T) {
	for _, c := range []struct {
		file, message string
		rules         []string
	}{
		{"presence.proto", "PresenceSubscribe", []string{"[S-15-2]", "[S-15-5]"}},
		{"presence.proto", "Presence", []string{"[S-15-3]", "[S-15-5]"}},
		{"parley.proto", "Message", []string{"[S-8-16]"}},
	} {
		b, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		// The comment above the message and its body, up to the comment
		// of the next message (which cites its own rules).
		lines := strings.Split(string(b), "\n")
		start := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "message "+c.message+" {") })
		if start < 0 {
			t.Errorf("%s: no message %s", c.file, c.message)
			continue
		}
		from := start
		for from > 0 && strings.HasPrefix(lines[from-1], "//") {
			from--
		}
		end := start + 1
		for end < len(lines) && !strings.HasPrefix(lines[end], "message ") {
			end++
		}
		for end > start+1 && strings.HasPrefix(lines[end-1], "//") {
			end--
		}
		text := strings.Join(lines[from:end], "\n")
		for _, id := range c.rules {
			if !strings.Contains(text, id) {
				t.Errorf("%s: the comments of %s do not cite %s", c.file, c.message, id)
			}
		}
	}
}
