package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestMain fails the run if a test leaves a goroutine behind.
func TestMain(m *testing.M) { nodetest.VerifyMain(m) }

// testEnv returns an env with empty input, captured output, no environment
// variables and a configuration directory of its own.
func testEnv(t *testing.T) (env, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	var out, errOut bytes.Buffer
	dir := t.TempDir()
	return env{
		stdin: strings.NewReader(""), stdout: &out, stderr: &errOut,
		getenv:    func(string) string { return "" },
		configDir: func() (string, error) { return dir, nil },
		hostname:  func() (string, error) { return "testhost", nil },
	}, &out, &errOut
}

// TestBadInput checks that bad input exits with 2 and one readable line on
// stderr, before anything touches the network.
func TestBadInput(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"register", "--server", "h:1", "--fingerprint", fp}, "register needs --phone"},
		{[]string{"register", "--phone", "5551234567", "--server", "h:1", "--fingerprint", fp}, "needs its country code"},
		{[]string{"register", "--phone", "+1555", "--server", "h:1", "--fingerprint", fp}, "not a phone number"},
		{[]string{"register", "--phone", "+15551234567", "--fingerprint", fp}, "no server"},
		{[]string{"register", "--phone", "+15551234567", "--server", "h:1", "--fingerprint", "abc"}, "bad --fingerprint"},
		{[]string{"register", "--phone", "+15551234567", "--server", "h:1"}, "no way to trust the server"},
		{[]string{"register", "--phone", "+15551234567", "--server", "h:1", "--fingerprint", fp, "--ca", "x.pem"}, "either --fingerprint or --ca"},
		{[]string{"register", "--phone", "+15551234567", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"register", "--phone", "+15551234567", "extra"}, `unexpected argument "extra"`},
		{[]string{"lookup"}, "lookup needs phone numbers"},
		{[]string{"lookup", "+15551234567", "12"}, "needs its country code"},
		{[]string{"send", "hello"}, "send needs --to"},
		{[]string{"send", "--to", "+1555", "hi"}, "want a user id or a phone number"},
		{[]string{"send", "--to", "5", "--timeout", "0s", "hi"}, "--timeout must be positive"},
		{[]string{"chat"}, "chat needs --to"},
		{[]string{"chat", "--to", "5", "--group", "6"}, "chat needs --to"},
		{[]string{"send", "--to", "5", "--group", "6", "hi"}, "send needs --to"},
		{[]string{"send-file", "x.txt"}, "send-file needs --to"},
		{[]string{"send-file", "--to", "5"}, "exactly one file"},
		{[]string{"send-file", "--to", "5", "/nonexistent/x.txt"}, "no such file"},
		{[]string{"save-file", "7"}, "save-file needs"},
		{[]string{"save-file", "seven", "x"}, "not a message number"},
		{[]string{"group"}, "group needs a subcommand"},
		{[]string{"group", "rename", "x"}, `unknown group subcommand "rename"`},
		{[]string{"group", "create"}, "group create needs a name"},
		{[]string{"group", "create", strings.Repeat("n", 101)}, "longer than 100 bytes"},
		{[]string{"group", "add", "hike"}, "group add needs a group and members"},
		{[]string{"group", "add", "hike", "+1555"}, "not a phone number"},
		{[]string{"group", "leave"}, "group leave needs one group"},
		{[]string{"groups", "x"}, `unexpected argument "x"`},
		{[]string{"approve"}, "approve needs the code"},
		{[]string{"approve", "ILOU"}, "is not a link code"},
		{[]string{"revoke"}, "revoke needs one device id"},
		{[]string{"revoke", "x"}, `"x" is not a device id`},
		{[]string{"devices", "x"}, `unexpected argument "x"`},
		{[]string{"link", "--fingerprint", fp}, "no server"},
		{[]string{"link", "x"}, `unexpected argument "x"`},
		{[]string{"listen", "now"}, `unexpected argument "now"`},
		{[]string{"listen", "--profile", "../etc"}, "bad --profile"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			e, out, errOut := testEnv(t)
			if tt.args[0] == "send" && tt.args[len(tt.args)-1] == "hi" && strings.Contains(tt.want, "user id") {
				registerFake(t, e) // --to is checked once the profile is open
			}
			code := run(context.Background(), tt.args, e)
			if code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", code, errOut)
			}
			if lines := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n"); len(lines) != 1 ||
				!strings.HasPrefix(lines[0], "parley: ") || !strings.Contains(lines[0], tt.want) {
				t.Errorf("stderr %q, want one line with %q", errOut, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("stdout %q", out)
			}
		})
	}
}

// registerFake stores credentials in the default profile of e, as if
// register had run, pointing at a server that is not there.
func registerFake(t *testing.T, e env) {
	t.Helper()
	o := options{profile: "default"}
	st, err := o.openStore(e, true)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	creds := client.Credentials{User: 1, Device: 1, Secret: make([]byte, protocol.CredentialLen)}
	for _, err := range []error{
		st.SaveCredentials(creds),
		st.SetAttr(attrServer, "127.0.0.1:1"),
		st.SetAttr(attrFingerprint, strings.Repeat("ab", 32)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestNotRegistered(t *testing.T) {
	e, _, errOut := testEnv(t)
	code := run(context.Background(), []string{"send", "--to", "5", "hi"}, e)
	if code != 1 || !strings.Contains(errOut.String(), `profile "default" is not registered`) {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestHelp(t *testing.T) {
	e, out, _ := testEnv(t)
	if code := run(context.Background(), []string{"help"}, e); code != 0 || !strings.Contains(out.String(), "parley register") {
		t.Errorf("help: exit %d, stdout %q", code, out)
	}
	e, _, errOut := testEnv(t)
	if code := run(context.Background(), nil, e); code != 2 || !strings.Contains(errOut.String(), "Usage:") {
		t.Errorf("no arguments: exit %d", code)
	}
}

// TestSendQueues: when the server answers nothing within --timeout, or
// nothing listens at its address, send says which, at once in the second
// case. The message is queued in the profile with its plaintext, to be
// encrypted for the recipient's devices once the server answers (the
// client fetches their keys then), and send says so.
func TestSendQueues(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan []net.Conn, 1)
	go func() {
		var conns []net.Conn
		for {
			c, err := silent.Accept()
			if err != nil {
				held <- conns
				return
			}
			conns = append(conns, c)
		}
	}()
	defer func() {
		silent.Close()
		for _, c := range <-held {
			c.Close()
		}
	}()
	for _, tt := range []struct {
		server, timeout, want string
	}{
		{silent.Addr().String(), "50ms", "no answer from the server within 50ms; the message stays queued"},
		{"127.0.0.1:1", "1h", "cannot reach the server at 127.0.0.1:1 (connection refused); the message stays queued"},
	} {
		e, _, errOut := testEnv(t)
		registerFake(t, e)
		code := run(context.Background(), []string{"send", "--server", tt.server, "--to", "5", "--timeout", tt.timeout, "hello"}, e)
		if code != 1 || !strings.Contains(errOut.String(), tt.want) {
			t.Errorf("exit %d, stderr %q, want %q", code, errOut, tt.want)
		}
		o := options{profile: "default"}
		st, err := o.openStore(e, false)
		if err != nil {
			t.Fatal(err)
		}
		if s, _ := st.Load(); len(s.Outbox) != 1 || len(s.Outbox[0].Plain) == 0 || len(s.Outbox[0].Envelopes) != 0 {
			t.Errorf("outbox %+v, want the message, not encrypted yet", s.Outbox)
		}
		st.Close()
	}
}

// TestInteractiveBackoff: chat and listen retry within a few seconds,
// the one-shot commands with the SDK's defaults.
func TestInteractiveBackoff(t *testing.T) {
	e, _, _ := testEnv(t)
	registerFake(t, e)
	for _, interactive := range []bool{true, false} {
		o := options{profile: "default", timeout: time.Second}
		k, err := connect(context.Background(), &o, e, newConsole(e, true), connectOptions{interactive: interactive})
		if err != nil {
			t.Fatal(err)
		}
		max := k.cfg.BackoffMax
		k.close()
		if interactive && (max == 0 || max > 5*time.Second) || !interactive && max != 0 {
			t.Errorf("interactive %v: BackoffMax %v", interactive, max)
		}
	}
}

func TestNormalisePhone(t *testing.T) {
	for in, want := range map[string]string{
		"+1 (555) 123-4567": "+15551234567",
		" +44 7700.900123 ": "+447700900123",
	} {
		if got, err := normalisePhone(in); err != nil || got != want {
			t.Errorf("normalisePhone(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"5551234567", "+0555123456", "+1555", "+1555123456789012", "+1555abc4567"} {
		if _, err := normalisePhone(in); err == nil {
			t.Errorf("normalisePhone(%q) accepted", in)
		}
	}
}

func TestBody(t *testing.T) {
	for _, tt := range []struct {
		b    []byte
		typ  pb.ContentType
		want string
	}{
		{[]byte("plain"), 0, "plain"},
		{[]byte("two\nlines"), 0, "two\n    lines"},
		{[]byte("\x1b[2Jgotcha\r"), 0, "\uFFFD[2Jgotcha\uFFFD"},
		{[]byte("evil\u202ereversed"), 0, "evil\uFFFDreversed"},
		{[]byte{0xff, 0xfe}, 0, "[2 bytes, not text]"},
		{make([]byte, 2048), pb.ContentType_CONTENT_IMAGE, "[image, 2.0 KiB]"},
		{[]byte("x"), 99, "[content type 99, 1 byte]"},
	} {
		if got := body(tt.b, tt.typ); got != tt.want {
			t.Errorf("body(%q, %v) = %q, want %q", tt.b, tt.typ, got, tt.want)
		}
	}
}

// TestSize: byte counts in IEC units, as 1024s, never "KB" for KiB.
func TestSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 bytes", 1: "1 byte", 1023: "1023 bytes", 1024: "1.0 KiB",
		300_000: "293.0 KiB", 1<<20 - 1: "1.0 MiB", 100 << 20: "100.0 MiB", 3 << 30: "3.0 GiB",
	} {
		if got := size(n); got != want {
			t.Errorf("size(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestTypingNote: on a terminal whose line the command edits, who is
// typing shows before the line being typed and goes away when they stop,
// with no line of output; elsewhere there is no such place.
func TestTypingNote(t *testing.T) {
	var out, term bytes.Buffer
	con := &console{out: &out, err: &term, now: time.Now}
	if con.setNote("x is typing…") {
		t.Error("a note shown without an edited line")
	}
	con.startEditing("> ")
	con.editing("hel")
	term.Reset()
	if !con.setNote("+15551234567 is typing…") || term.String() != "\r\x1b[K(+15551234567 is typing…) > hel" {
		t.Errorf("note drawn as %q", term.String())
	}
	term.Reset()
	if !con.setNote("") || term.String() != "\r\x1b[K> hel" {
		t.Errorf("note removed as %q", term.String())
	}
	if out.Len() != 0 {
		t.Errorf("output %q", out.String())
	}
}

func TestMarks(t *testing.T) {
	fancy, plain := &console{}, &console{plain: true}
	for s, want := range map[msgState][2]string{
		stateSent:      {"✓ sent", "sent"},
		stateDelivered: {"✓✓ delivered", "delivered"},
		stateRead:      {"✓✓ read", "read"},
	} {
		if got := fancy.mark(s); got != want[0] {
			t.Errorf("mark(%d) = %q", s, got)
		}
		if got := plain.mark(s); got != want[1] {
			t.Errorf("plain mark(%d) = %q", s, got)
		}
	}
}

// TestChatReceipts checks [S-10-4] on screen: receipts move the marks of
// the messages they cover, READ implies delivered, and a receipt that
// overtakes SENT still counts.
func TestChatReceipts(t *testing.T) {
	var out bytes.Buffer
	con := &console{out: &out, err: &out, plain: true, now: time.Now}
	ui := newChatUI(con, newReadMarker(con))
	ui.start(conversation{peer: 7})
	a, b, c := ui.add("first"), ui.add("second"), ui.add("third")
	now := time.Now()
	ui.onSent(a)(client.Sent{ID: 10, Time: now}, nil)
	ui.onSent(b)(client.Sent{ID: 20, Time: now}, nil)
	ui.receipt(client.Receipt{Peer: 7, Type: pb.ReceiptType_RECEIPT_DELIVERED, UpTo: 20})
	ui.receipt(client.Receipt{Peer: 8, Type: pb.ReceiptType_RECEIPT_READ, UpTo: 99}) // another chat
	ui.receipt(client.Receipt{Peer: 7, Type: pb.ReceiptType_RECEIPT_READ, UpTo: 30}) // before third's SENT
	ui.onSent(c)(client.Sent{ID: 30, Time: now}, nil)
	d := ui.add("fourth")
	ui.onSent(d)(client.Sent{}, errors.New("boom"))

	got := out.String()
	for _, want := range []string{
		"  sent " + con.when(now) + ": first\n",
		"  sent " + con.when(now) + ": second\n",
		"  delivered: second (and 1 before)\n",
		"  read: second (and 1 before)\n",
		"  read " + con.when(now) + ": third\n",
		"  not sent (boom): fourth\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if n := ui.pending(); n != 0 {
		t.Errorf("%d pending", n)
	}
	if len(ui.mine) != 0 {
		t.Errorf("%d messages kept after all were read or failed", len(ui.mine))
	}
}
