package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// cmdChat is an interactive conversation with one user: lines typed are
// sent; incoming messages are printed and marked read; the marks of sent
// messages follow their receipts.
func cmdChat(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("chat", e)
	to := fs.String("to", "", "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("chat: unexpected argument %q", pos[0])
	}
	if *to == "" {
		return usagef("chat needs --to USER or --to +NUMBER")
	}
	con := newConsole(e, o.plain)
	marker := newReadMarker(con)
	ui := newChatUI(con, marker)
	k, err := connect(ctx, &o, e, con, connectOptions{consume: true, verbose: true, handle: ui.handle})
	if err != nil {
		return err
	}
	defer k.close()
	marker.c = k.c
	mctx, stopMarker := context.WithCancel(k.ctx)
	markerDone := make(chan struct{})
	go func() { defer close(markerDone); marker.run(mctx) }()
	defer func() {
		stopMarker()
		<-markerDone
		fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		marker.flush(fctx) // what was shown last is marked read before leaving
		cancel()
	}()

	rctx, cancel := context.WithTimeout(k.ctx, o.timeout)
	peer, name, err := k.resolve(rctx, *to)
	cancel()
	if err != nil {
		return err
	}
	ui.setPeer(peer)
	con.statusf("Chatting with %s. Type a message and press Enter; Ctrl-D or /quit to leave.", name)

	in := lines(k.ctx, e.stdin)
	for {
		select {
		case <-k.ctx.Done():
			return k.wait()
		case line, ok := <-in:
			if !ok || strings.TrimSpace(line) == "/quit" {
				if n := ui.pending(); n > 0 {
					con.statusf("%d message(s) not yet sent: they go out with the next parley command of this profile.", n)
				}
				return nil
			}
			if strings.TrimSpace(line) == "" {
				continue
			}
			if len(line) > protocol.MaxMessageBody {
				con.statusf("That message is longer than %d bytes; not sent.", protocol.MaxMessageBody)
				continue
			}
			m := ui.add(line)
			if _, err := k.c.SendAsync(peer, []byte(line), pb.ContentType_CONTENT_TEXT, ui.onSent(m)); err != nil {
				ui.onSent(m)(client.Sent{}, err)
			}
		}
	}
}

// chatUI is the state of the conversation on screen. Its methods are
// called from the input loop and from the client's event goroutine.
type chatUI struct {
	con    *console
	marker *readMarker

	mu        sync.Mutex // guards the fields below
	peer      uint64     // 0 until --to is resolved
	mine      []*outMsg  // messages sent to peer not yet read (or failed), in order
	delivered uint64     // the highest DELIVERED up_to from peer ([S-10-4])
	read      uint64     // the highest READ up_to from peer
}

// outMsg is a message the user typed.
type outMsg struct {
	text  string
	id    uint64 // from SENT; 0 before
	state msgState
}

func newChatUI(con *console, marker *readMarker) *chatUI {
	return &chatUI{con: con, marker: marker}
}

func (u *chatUI) setPeer(peer uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.peer = peer
}

// add records a message the user is sending.
func (u *chatUI) add(text string) *outMsg {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := &outMsg{text: text}
	u.mine = append(u.mine, m)
	return m
}

// pending returns how many messages still wait for SENT.
func (u *chatUI) pending() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, m := range u.mine {
		if m.state == statePending {
			n++
		}
	}
	return n
}

// onSent returns the SendAsync callback of m.
func (u *chatUI) onSent(m *outMsg) func(client.Sent, error) {
	return func(s client.Sent, err error) {
		u.mu.Lock()
		defer u.mu.Unlock()
		if err != nil {
			m.state = stateFailed
			u.con.printf("  %s (%s): %s", u.con.mark(stateFailed), describe(err), preview(m.text))
			u.pruneLocked()
			return
		}
		m.id = s.ID
		// A receipt may have come first: READ implies delivered ([S-10-4]).
		switch {
		case m.id <= u.read:
			m.state = stateRead
		case m.id <= u.delivered:
			m.state = stateDelivered
		default:
			m.state = stateSent
		}
		u.con.printf("  %s %s: %s", u.con.mark(m.state), u.con.when(s.Time), preview(m.text))
		u.pruneLocked()
	}
}

// handle shows the events of the conversation.
func (u *chatUI) handle(k *conn, ev client.Event) {
	switch ev := ev.(type) {
	case client.Message:
		u.con.printf("[%s] %s: %s", u.con.when(ev.Time), k.names.of(ev.From), body(ev.Body, ev.Type))
		u.marker.mark(ev.From, ev.ID)
	case client.Receipt:
		u.receipt(ev)
	case client.Synced:
		u.con.statusf("up to date")
	}
}

// receipt applies a receipt from the peer to the messages it covers.
func (u *chatUI) receipt(r client.Receipt) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if r.Peer != u.peer || u.peer == 0 {
		return
	}
	state := stateDelivered
	u.delivered = max(u.delivered, r.UpTo)
	if r.Type == pb.ReceiptType_RECEIPT_READ {
		state = stateRead
		u.read = max(u.read, r.UpTo)
	}
	var changed []*outMsg
	for _, m := range u.mine {
		if m.id != 0 && m.id <= r.UpTo && m.state < state {
			m.state = state
			changed = append(changed, m)
		}
	}
	switch n := len(changed); {
	case n == 1:
		u.con.printf("  %s: %s", u.con.mark(state), preview(changed[0].text))
	case n > 1:
		u.con.printf("  %s: %s (and %d before)", u.con.mark(state), preview(changed[n-1].text), n-1)
	}
	u.pruneLocked()
}

// pruneLocked forgets the messages at the front that can change no more.
func (u *chatUI) pruneLocked() {
	i := 0
	for i < len(u.mine) && (u.mine[i].state == stateRead || u.mine[i].state == stateFailed) {
		u.mine[i] = nil
		i++
	}
	u.mine = u.mine[i:]
}

// readMarker marks shown messages read, one READ per peer for everything
// shown since the last, without holding up the display.
type readMarker struct {
	con *console
	c   *client.Client // set before run

	mu      sync.Mutex        // guards pending
	pending map[uint64]uint64 // peer → highest message id shown
	kick    chan struct{}
}

func newReadMarker(con *console) *readMarker {
	return &readMarker{con: con, pending: make(map[uint64]uint64), kick: make(chan struct{}, 1)}
}

// mark records that message id from peer has been shown.
func (r *readMarker) mark(peer, id uint64) {
	r.mu.Lock()
	r.pending[peer] = max(r.pending[peer], id)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run sends READs as messages are shown, until ctx is done.
func (r *readMarker) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			r.flush(ctx)
		}
	}
}

// flush sends a READ for every peer with messages shown since the last.
// What it cannot send stays pending.
func (r *readMarker) flush(ctx context.Context) {
	r.mu.Lock()
	todo := r.pending
	r.pending = make(map[uint64]uint64)
	r.mu.Unlock()
	for peer, id := range todo {
		if err := r.c.MarkRead(ctx, peer, id); err != nil {
			r.mu.Lock()
			r.pending[peer] = max(r.pending[peer], id)
			r.mu.Unlock()
			if ctx.Err() == nil && !errors.Is(err, client.ErrClosed) {
				r.con.statusf("could not mark messages read: %s", describe(err))
			}
		}
	}
}
