package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/parley-im/parley/client"
)

// conn is the running client of one command.
type conn struct {
	ctx    context.Context // ends when the command must give up, with the reason as cause
	cancel context.CancelCauseFunc
	// calls is the parent of every request's context: it ends with ctx,
	// or, in a one-shot command, when the server cannot be reached
	// (cause *unreachableError). The client keeps running meanwhile, so
	// a send made then is still stored in the outbox.
	calls     context.Context
	stopCalls context.CancelCauseFunc
	o         *options
	con       *console
	store     *client.FileStore
	c         *client.Client
	names     *names
	cfg       client.Config // the client's configuration
	addr      string        // the server's address
	runErr    chan error    // Run's result

	interactive bool                      // chat or listen: report outages once, retry quietly
	handle      func(*conn, client.Event) // the command's own event handling; may be nil

	hist history // messages shown lately, for quotes, edits and reactions (controls.go)

	mu    sync.Mutex      // guards asked and link
	asked map[uint64]bool // groups whose name learnGroup asked for
	link  linkState       // what the user was last told about the connection
}

// linkState is what the user knows about the connection.
type linkState uint8

const (
	linkNew  linkState = iota // not connected yet
	linkUp                    // logged in
	linkDown                  // lost, or never made; retrying
)

// Reconnection delays of the interactive commands (chat, listen): one
// person waits at the terminal, so the bound stays at a few seconds
// rather than the SDK's minute ([S-6-13] recommends, for a fleet of
// devices, a bound that grows to 60 s).
const (
	interactiveBackoffMin = 500 * time.Millisecond
	interactiveBackoffMax = 5 * time.Second
)

// connectOptions say how a command uses the connection.
type connectOptions struct {
	// consume is true for commands that show the inbox (listen, chat):
	// entries are acknowledged once shown. Other commands leave the inbox
	// alone, so a quick send does not swallow messages unseen.
	consume bool
	// interactive is true for commands that run until the user stops them
	// (listen, chat): they keep trying to reach the server with a short
	// backoff, say once that the connection is lost and once that it is
	// back. The others give up as soon as the server cannot be reached.
	interactive bool
	// handle receives every event after conn's own handling, on the
	// client's event goroutine.
	handle func(*conn, client.Event)
}

// connect opens the profile, starts its client and returns at once; the
// client connects in the background.
func connect(ctx context.Context, o *options, e env, con *console, co connectOptions) (*conn, error) {
	st, err := o.openStore(e, false)
	if err != nil {
		return nil, err
	}
	state, err := st.Load()
	if err != nil || state.Credentials.User == 0 {
		st.Close()
		if err == nil {
			err = o.notRegistered()
		}
		return nil, err
	}
	cfg, err := o.config(st, e)
	if err != nil {
		st.Close()
		return nil, err
	}
	if co.interactive {
		cfg.BackoffMin, cfg.BackoffMax = interactiveBackoffMin, interactiveBackoffMax
	}
	k := &conn{
		o: o, con: con, store: st, names: namesOf(st), cfg: cfg, addr: cfg.Addr, runErr: make(chan error, 1),
		interactive: co.interactive, handle: co.handle,
	}
	if phone := st.Attr(attrPhone); phone != "" {
		k.names.set(state.Credentials.User, phone)
	}
	k.ctx, k.cancel = context.WithCancelCause(ctx)
	k.calls, k.stopCalls = context.WithCancelCause(k.ctx)
	cfg.ManualAck = !co.consume
	cfg.OnEvent = k.onEvent
	c, err := client.New(cfg, state.Credentials, st)
	if err != nil {
		st.Close()
		return nil, err
	}
	k.c = c
	go func() { k.runErr <- c.Run(k.ctx) }()
	return k, nil
}

// call returns the context of one request: it ends after --timeout, when
// the command gives up, or when the server turns out to be unreachable.
func (k *conn) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(k.calls, k.o.timeout)
}

// unreachableError says that a command could not reach the server.
type unreachableError struct {
	addr string
	err  error // the failed dial
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach the server at %s (%s)", e.addr, dialReason(e.err))
}

func (e *unreachableError) Unwrap() error { return e.err }

// onEvent runs on the client's event goroutine.
func (k *conn) onEvent(ev client.Event) {
	switch ev := ev.(type) {
	case client.Connected:
		k.mu.Lock()
		was := k.link
		k.link = linkUp
		k.mu.Unlock()
		switch {
		case k.interactive && was == linkDown:
			k.con.statusf("reconnected to %s", k.addr)
		case k.interactive || k.o.verbose:
			k.con.statusf("connected to %s", k.addr)
		}
	case client.Disconnected:
		if fatalToCommand(ev.Err) {
			k.cancel(ev.Err)
			return
		}
		k.mu.Lock()
		was := k.link
		k.link = linkDown
		k.mu.Unlock()
		switch {
		case k.o.verbose: // every attempt
			k.con.statusf("disconnected: %s; reconnecting in %v", describe(ev.Err), ev.RetryIn.Round(time.Millisecond))
		case !k.interactive:
			if was == linkNew && isDialError(ev.Err) {
				k.stopCalls(&unreachableError{addr: k.addr, err: ev.Err})
			}
		case was == linkNew:
			k.con.statusf("cannot reach the server at %s (%s); trying again in the background, and what you send goes out once it answers", k.addr, dialReason(ev.Err))
		case was == linkUp:
			k.con.statusf("lost the connection to %s (%s); reconnecting…", k.addr, dialReason(ev.Err))
		}
	case client.Fatal:
		k.cancel(ev.Err)
	case client.SendDone:
		// A message queued by an earlier command has been answered.
		to := k.names.of(ev.To)
		if ev.Group != 0 {
			to = k.groupName(ev.Group)
		}
		if ev.Err != nil {
			k.con.statusf("an earlier message to %s was not sent: %s", to, describe(ev.Err))
		} else if k.o.verbose {
			k.con.statusf("an earlier message to %s: %s", to, k.con.mark(stateSent))
		}
	}
	if k.handle != nil {
		k.handle(k, ev)
	}
}

// reason returns why a call failed: the reason the command gave up, or
// found the server unreachable, if it did; else err.
func (k *conn) reason(err error) error {
	if cause := context.Cause(k.calls); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// wait blocks until the command is interrupted (nil) or the client gave up
// (the reason).
func (k *conn) wait() error {
	<-k.ctx.Done()
	if cause := context.Cause(k.ctx); !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// close stops the client and releases the profile.
func (k *conn) close() {
	k.cancel(context.Canceled)
	_ = k.c.Close()
	<-k.runErr
	_ = k.store.Close()
}

// resolve turns --to (a user id or a phone number) into a user id and the
// name to show, looking the number up if the profile does not know it.
func (k *conn) resolve(ctx context.Context, to string) (uint64, string, error) {
	if u, ok := parseUser(to); ok {
		return u, k.names.of(u), nil
	}
	phone, err := normalisePhone(to)
	if err != nil {
		return 0, "", usagef("--to %q: want a user id or a phone number like +15551234567", to)
	}
	if u, ok := parseUser(k.store.Attr(attrContact + phone)); ok {
		return u, phone, nil
	}
	contacts, err := k.c.Lookup(ctx, []string{phone})
	if err != nil {
		return 0, "", fmt.Errorf("looking up %s: %w", phone, k.reason(err))
	}
	k.remember(contacts)
	for _, ct := range contacts {
		if ct.Phone == phone {
			return ct.User, phone, nil
		}
	}
	return 0, "", fmt.Errorf("%s is not registered on this server", phone)
}

// remember keeps looked-up contacts in the profile. A user id never
// changes ([S-9-4]), so the cache never goes stale.
func (k *conn) remember(contacts []client.Contact) {
	for _, ct := range contacts {
		k.names.set(ct.User, ct.Phone)
		if err := k.store.SetAttr(attrContact+ct.Phone, strconv.FormatUint(ct.User, 10)); err != nil {
			k.con.statusf("could not save contact %s: %v", ct.Phone, err)
		}
	}
}
