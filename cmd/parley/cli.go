package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// env is what the command takes from its process: standard streams,
// environment variables and the user's directories. Tests replace it.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	configDir      func() (string, error)
	hostname       func() (string, error)
	// dial, if not nil, opens the client's connections instead of a
	// net.Dialer (client.Config.Dial): tests take the server away with it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// now, if not nil, is the terminal's clock instead of time.Now: tests
	// move it to see a message arrive after it disappeared.
	now func() time.Time
}

func osEnv() env {
	return env{
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr,
		getenv: os.Getenv, configDir: os.UserConfigDir, hostname: os.Hostname,
	}
}

const usage = `parley: a terminal client for Parley

Usage:
  parley register --server HOST:PORT --fingerprint HEX --phone +NUMBER [--device-name NAME] [--force]
  parley lookup +NUMBER...
  parley send --to USER|+NUMBER|--group GROUP [TEXT...]   (no TEXT: read the message from stdin)
  parley send-file --to USER|+NUMBER|--group GROUP PATH   (encrypted end to end)
  parley save-file SEQ PATH                               (a file listen or chat showed)
  parley listen
  parley chat --to USER|+NUMBER | --group GROUP
  parley verify --to USER|+NUMBER                         (the security code to compare)

Groups (GROUP is a group id, or a name this profile has seen):
  parley group create NAME +NUMBER...
  parley group add|remove|promote|demote GROUP +NUMBER...
  parley group leave GROUP
  parley group info GROUP
  parley groups

Devices:
  parley link --server HOST:PORT --fingerprint HEX [--device-name NAME] [--force]
                      make this machine a device of an account: shows a code to approve
  parley approve CODE on the account's primary device: link the device showing CODE
  parley devices      the account's devices
  parley revoke ID    remove a device from the account

Every command takes:
  --profile NAME      state in <config dir>/parley/NAME.json (default "default", env PARLEY_PROFILE)
  --state FILE        state file, instead of the profile's
  --server HOST:PORT  server address (env PARLEY_SERVER; stored by register)
  --fingerprint HEX   SHA-256 of the server certificate, printed by parleyd (env PARLEY_FINGERPRINT)
  --ca FILE           verify the server against this CA certificate (PEM) instead
  --plaintext         no TLS (only for tests or behind a trusted proxy)
  --plain             plain output: words instead of check marks
  --timeout DURATION  how long a command waits for the server's answer (default 30s)
  -v                  log connection details to stderr

Registering a number again, here or on another machine, revokes every
device of the account: to use one account on several machines, register
it on one and link the others (parley link, then parley approve).`

// errHelp asks for the usage text on stdout and exit status 0.
var errHelp = errors.New("help requested")

// usageError is bad input: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// run executes one command and returns the exit status.
func run(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "register":
		err = cmdRegister(ctx, args[1:], e)
	case "lookup":
		err = cmdLookup(ctx, args[1:], e)
	case "send":
		err = cmdSend(ctx, args[1:], e)
	case "listen":
		err = cmdListen(ctx, args[1:], e)
	case "verify":
		err = cmdVerify(ctx, args[1:], e)
	case "chat":
		err = cmdChat(ctx, args[1:], e)
	case "send-file":
		err = cmdSendFile(ctx, args[1:], e)
	case "save-file":
		err = cmdSaveFile(ctx, args[1:], e)
	case "group":
		err = cmdGroup(ctx, args[1:], e)
	case "groups":
		err = cmdGroups(ctx, args[1:], e)
	case "link":
		err = cmdLink(ctx, args[1:], e)
	case "approve":
		err = cmdApprove(ctx, args[1:], e)
	case "devices":
		err = cmdDevices(ctx, args[1:], e)
	case "revoke":
		err = cmdRevoke(ctx, args[1:], e)
	case "help", "-h", "-help", "--help":
		err = errHelp
	default:
		err = usagef("unknown command %q (run parley help)", args[0])
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		fmt.Fprintln(e.stdout, usage)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(e.stderr, "parley:", oneLine(err.Error()))
		return 2
	}
	fmt.Fprintln(e.stderr, "parley:", oneLine(describe(err)))
	return 1
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// options are the flags every command takes.
type options struct {
	profile     string
	state       string
	server      string
	fingerprint string
	ca          string
	plaintext   bool
	plain       bool
	verbose     bool
	timeout     time.Duration
}

// flags returns a flag set for command name with the common flags bound
// to o, their defaults taken from the environment.
func (o *options) flags(name string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	profile := e.getenv("PARLEY_PROFILE")
	if profile == "" {
		profile = "default"
	}
	fs.StringVar(&o.profile, "profile", profile, "")
	fs.StringVar(&o.state, "state", "", "")
	fs.StringVar(&o.server, "server", e.getenv("PARLEY_SERVER"), "")
	fs.StringVar(&o.fingerprint, "fingerprint", e.getenv("PARLEY_FINGERPRINT"), "")
	fs.StringVar(&o.ca, "ca", "", "")
	fs.BoolVar(&o.plaintext, "plaintext", false, "")
	fs.BoolVar(&o.plain, "plain", false, "")
	fs.BoolVar(&o.verbose, "v", false, "")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "")
	return fs
}

// parse parses args with fs, allowing flags between positional arguments;
// everything after "--" is positional.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for i, a := range args {
		if a == "--" {
			args, rest = args[:i], args[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if o := fs.Lookup("timeout"); o != nil {
		if d, _ := time.ParseDuration(o.Value.String()); d <= 0 {
			return nil, usagef("%s: --timeout must be positive", fs.Name())
		}
	}
	return append(pos, rest...), nil
}

var profileName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)

// statePath returns the state file of the chosen profile.
func (o *options) statePath(e env) (string, error) {
	if o.state != "" {
		return o.state, nil
	}
	if !profileName.MatchString(o.profile) {
		return "", usagef("bad --profile %q: use letters, digits, '.', '_' and '-'", o.profile)
	}
	dir, err := e.configDir()
	if err != nil {
		return "", fmt.Errorf("no configuration directory (use --state FILE): %w", err)
	}
	return filepath.Join(dir, "parley", o.profile+".json"), nil
}

// openStore opens the profile's state file. With create, a missing file
// (and directory) is fine; without, the profile must be registered.
func (o *options) openStore(e env, create bool) (*client.FileStore, error) {
	path, err := o.statePath(e)
	if err != nil {
		return nil, err
	}
	if create {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, o.notRegistered()
	}
	st, err := client.OpenFileStore(path)
	if errors.Is(err, client.ErrLocked) {
		return nil, fmt.Errorf("profile %q is in use by another parley command: if a chat holds it, quit the chat (Ctrl-D) first, or type /help in it (/send-file, /save and /approve work there); a listen stops with Ctrl-C", o.profile)
	}
	return st, err
}

func (o *options) notRegistered() error {
	return fmt.Errorf("profile %q is not registered: run parley register --profile %s --phone +NUMBER --server HOST:PORT --fingerprint HEX", o.profile, o.profile)
}

// Profile attributes.
const (
	attrServer      = "server"
	attrFingerprint = "fingerprint"
	attrCA          = "ca"
	attrPlaintext   = "plaintext"
	attrPhone       = "phone"
	attrContact     = "contact:" // + phone → user id
)

// config builds the client configuration from the flags, falling back to
// what the profile stored at registration. How the server is trusted comes
// from the flags if any of --fingerprint, --ca, --plaintext is given, else
// from the profile.
func (o *options) config(st *client.FileStore, e env) (client.Config, error) {
	server, fp, ca, plaintext := o.server, o.fingerprint, o.ca, o.plaintext
	if st != nil {
		if server == "" {
			server = st.Attr(attrServer)
		}
		if fp == "" && ca == "" && !plaintext {
			fp, ca, plaintext = st.Attr(attrFingerprint), st.Attr(attrCA), st.Attr(attrPlaintext) == "1"
		}
	}
	if server == "" {
		return client.Config{}, usagef("no server: use --server HOST:PORT or set PARLEY_SERVER")
	}
	cfg := client.Config{Addr: server, Plaintext: plaintext, Logger: o.logger(e), Dial: e.dial}
	switch {
	case plaintext:
		if fp != "" || ca != "" {
			return client.Config{}, usagef("--plaintext excludes --fingerprint and --ca")
		}
	case fp != "" && ca != "":
		return client.Config{}, usagef("use either --fingerprint or --ca, not both")
	case fp != "":
		if _, err := client.ParseFingerprint(fp); err != nil {
			return client.Config{}, usagef("bad --fingerprint: want the 64 hex digits parleyd prints")
		}
		cfg.Fingerprint = fp
	case ca != "":
		pem, err := os.ReadFile(ca)
		if err != nil {
			return client.Config{}, usagef("--ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return client.Config{}, usagef("--ca %s holds no PEM certificate", ca)
		}
		cfg.RootCAs = pool
	default:
		return client.Config{}, usagef("no way to trust the server: use --fingerprint HEX (printed by parleyd) or --ca FILE")
	}
	return cfg, nil
}

// logger returns the client's logger: warnings on stderr, everything with -v.
func (o *options) logger(e env) *slog.Logger {
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
}

// normalisePhone turns what a user typed into E.164: spaces, dashes, dots
// and parentheses go; the country code is required.
func normalisePhone(s string) (string, error) {
	var b strings.Builder
	for _, r := range strings.TrimSpace(s) {
		switch {
		case r == ' ' || r == '-' || r == '.' || r == '(' || r == ')':
		default:
			b.WriteRune(r)
		}
	}
	p := b.String()
	if !strings.HasPrefix(p, "+") {
		return "", usagef("phone number %q needs its country code, like +15551234567", s)
	}
	if err := client.ValidatePhone(p); err != nil {
		return "", usagef("%q is not a phone number: want + and 8 to 15 digits", s)
	}
	return p, nil
}

// describe turns an error into a sentence for the user.
func describe(err error) string {
	var se *client.ServerError
	var cv *tls.CertificateVerificationError
	var ue *unreachableError
	switch {
	case errors.As(err, &se):
		name := se.Code.String()
		if info, ok := protocol.LookupCode(se.Code); ok {
			name = info.Name
		}
		switch se.Code {
		case protocol.CodeAuthFailed:
			return "the server does not accept this device's credentials (AUTH_FAILED): register again with parley register --force"
		case protocol.CodeDeviceRevoked:
			return "this device was revoked because the number was registered again (DEVICE_REVOKED): register again with parley register --force"
		case protocol.CodeSessionReplaced:
			return "this device connected from another place, so this one stopped (SESSION_REPLACED)"
		case protocol.CodeUnsupportedVersion:
			return "the server does not speak this client's protocol version (UNSUPPORTED_VERSION): upgrade parley"
		case protocol.CodeRateLimited:
			return fmt.Sprintf("too many requests (RATE_LIMITED): try again in %v", se.RetryAfter.Round(time.Second))
		case protocol.CodeCodeExpired:
			return "the code expired or was never sent (CODE_EXPIRED): run parley register again for a new one"
		case protocol.CodeTooManyAttempts:
			return "too many wrong codes (TOO_MANY_ATTEMPTS): run parley register again for a new one"
		case protocol.CodeNotFound:
			return "no such user or device (NOT_FOUND)"
		case protocol.CodeNotMember:
			return "no such group, or you are not a member of it (NOT_MEMBER)"
		case protocol.CodeNotAdmin:
			return "only the group's admins can do that (NOT_ADMIN)"
		case protocol.CodeGroupFull:
			return fmt.Sprintf("the group would have more than %d members (GROUP_FULL)", protocol.MaxGroupMembers)
		case protocol.CodeTooManyGroups:
			return fmt.Sprintf("you are already in %d groups (TOO_MANY_GROUPS)", protocol.MaxGroupsPerUser)
		case protocol.CodeTooManyDevices:
			return fmt.Sprintf("the account already has %d linked devices (TOO_MANY_DEVICES): revoke one first", protocol.MaxCompanions)
		case protocol.CodeLinkExpired:
			return "the code is wrong, used or expired (LINK_EXPIRED): run parley link again on the new device"
		case protocol.CodeNotPrimary:
			return "only the primary device, the one registered with the phone number, can do that (NOT_PRIMARY)"
		case protocol.CodeInvalidArgument:
			return "the server refused the request as invalid (INVALID_ARGUMENT)"
		case protocol.CodeMediaTooLarge:
			return "the file is too large for the server (MEDIA_TOO_LARGE)"
		case protocol.CodeMediaNotFound:
			return "the server no longer has the file (MEDIA_NOT_FOUND): ask the sender to send it again"
		case protocol.CodeMediaNotReady:
			return "the file is still being uploaded (MEDIA_NOT_READY): try again later"
		case protocol.CodeMediaUnavailable:
			return "this server does not take files (MEDIA_UNAVAILABLE)"
		}
		switch {
		case se.GoAway:
			return "the server is going away (" + name + ")"
		case protocol.ScopeOf(se.Code) == protocol.ScopeConnection:
			return "the server closed the connection (" + name + ")"
		}
		return "the server refused (" + name + ")"
	case errors.As(err, &ue):
		return ue.Error() + ": is parleyd running there, and is the address right?"
	case isDialError(err):
		return (&unreachableError{addr: dialAddr(err), err: err}).Error() + ": is parleyd running there, and is the address right?"
	case errors.Is(err, client.ErrFingerprint):
		// Never the certificate's own fingerprint: copying it from here
		// would trust whoever sits between this machine and the server.
		return "the server's certificate does not match the fingerprint given (--fingerprint, PARLEY_FINGERPRINT, or the profile's): check it against the 64 hex digits parleyd printed when it started (in its log, or ask its operator); if they are the same, something between here and the server is intercepting the connection"
	case errors.As(err, &cv):
		return "the server's certificate is not trusted: " + err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return "the server did not answer in time: " + err.Error()
	case errors.Is(err, client.ErrNoAnswer):
		return "the connection broke before the server answered, so it may or may not have been done: check before trying again"
	case errors.Is(err, client.ErrMediaCorrupt):
		return "the downloaded file does not match what was sent: " + err.Error()
	}
	return err.Error()
}

// isDialError reports whether err is a failure to open a TCP connection
// to the server: nothing listens there, the host is unknown or does not
// answer.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// dialAddr returns the address a failed dial went to, or "the server".
func dialAddr(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Addr != nil {
		return op.Addr.String()
	}
	return "the server"
}

// dialReason says in a few words why a connection attempt failed or a
// connection was lost.
func dialReason(err error) string {
	var dns *net.DNSError
	var errno syscall.Errno
	var ne net.Error
	switch {
	case errors.As(err, &dns):
		return "cannot resolve " + dns.Name
	case errors.As(err, &errno):
		return errno.Error()
	case errors.As(err, &ne) && ne.Timeout():
		return "no answer"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the server closed the connection"
	case errors.Is(err, client.ErrDeadConnection):
		return "no answer to a ping"
	}
	return describe(err)
}

// fatalToCommand reports whether a connection failure means the command
// should give up rather than keep retrying: the server cannot be trusted.
func fatalToCommand(err error) bool {
	var cv *tls.CertificateVerificationError
	return errors.Is(err, client.ErrFingerprint) || errors.As(err, &cv)
}

// lines reads lines from r on a goroutine of its own, so a command can
// wait for input and for its context at once. The channel is closed at
// the end of the input. The goroutine ends with the input, or when ctx is
// done and its current read returns.
func lines(ctx context.Context, r io.Reader) <-chan string {
	ch := make(chan string)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 0, 4096), protocol.MaxMessageBody+1)
		for sc.Scan() {
			select {
			case ch <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// readLine waits for the next line of in.
func readLine(ctx context.Context, in <-chan string) (string, error) {
	select {
	case l, ok := <-in:
		if !ok {
			return "", io.EOF
		}
		return l, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// parseUser parses a user id given on the command line.
func parseUser(s string) (uint64, bool) {
	u, err := strconv.ParseUint(s, 10, 64)
	return u, err == nil && u != 0
}
