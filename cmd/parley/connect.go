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
	o      *options
	con    *console
	store  *client.FileStore
	c      *client.Client
	names  *names
	cfg    client.Config // the client's configuration
	addr   string        // the server's address
	runErr chan error    // Run's result

	verbose bool                      // report connection changes on stderr
	handle  func(*conn, client.Event) // the command's own event handling; may be nil

	mu    sync.Mutex      // guards asked
	asked map[uint64]bool // groups whose name learnGroup asked for
}

// connectOptions say how a command uses the connection.
type connectOptions struct {
	// consume is true for commands that show the inbox (listen, chat):
	// entries are acknowledged once shown. Other commands leave the inbox
	// alone, so a quick send does not swallow messages unseen.
	consume bool
	// verbose reports connection changes even without -v.
	verbose bool
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
	k := &conn{
		o: o, con: con, store: st, names: namesOf(st), cfg: cfg, addr: cfg.Addr, runErr: make(chan error, 1),
		verbose: co.verbose || o.verbose, handle: co.handle,
	}
	if phone := st.Attr(attrPhone); phone != "" {
		k.names.set(state.Credentials.User, phone)
	}
	k.ctx, k.cancel = context.WithCancelCause(ctx)
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

// onEvent runs on the client's event goroutine.
func (k *conn) onEvent(ev client.Event) {
	switch ev := ev.(type) {
	case client.Connected:
		if k.verbose {
			k.con.statusf("connected to %s", k.addr)
		}
	case client.Disconnected:
		if fatalToCommand(ev.Err) {
			k.cancel(ev.Err)
			return
		}
		if k.verbose {
			k.con.statusf("disconnected: %s; reconnecting in %v", describe(ev.Err), ev.RetryIn.Round(time.Millisecond))
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
		} else if k.verbose {
			k.con.statusf("an earlier message to %s: %s", to, k.con.mark(stateSent))
		}
	}
	if k.handle != nil {
		k.handle(k, ev)
	}
}

// reason returns why a call failed: the reason the command gave up, if it
// did, else err.
func (k *conn) reason(err error) error {
	if cause := context.Cause(k.ctx); cause != nil && !errors.Is(cause, context.Canceled) {
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
