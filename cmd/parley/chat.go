package main

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// cmdChat is an interactive conversation with one user or in one group:
// lines typed are sent; incoming messages are printed and marked read;
// the marks of sent messages follow their receipts. With a user, their
// presence and typing are shown; in a group, who sent what, and how many
// members received and read each message. The user's own typing is
// announced while a line is typed.
func cmdChat(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("chat", e)
	to := fs.String("to", "", "")
	group := fs.String("group", "", "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("chat: unexpected argument %q", pos[0])
	}
	if (*to == "") == (*group == "") {
		return usagef("chat needs --to USER, --to +NUMBER or --group GROUP")
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

	t, err := k.target(ctx, *to, *group)
	if err != nil {
		return err
	}
	if t.group != 0 {
		cctx, cancel := context.WithTimeout(k.ctx, o.timeout)
		g, err := k.c.Group(cctx, t.group)
		cancel()
		if err != nil {
			return k.reason(err)
		}
		k.rememberGroup(g.ID, g.Name)
		t.name = sanitize(g.Name)
		ui.setGroup(g, k.c.User())
		con.statusf("Chatting in %s (%d members). Type a message and press Enter; /save SEQ PATH saves a file; Ctrl-D or /quit to leave.", t.name, len(g.Members))
	} else {
		ui.setPeer(t.user)
		con.statusf("Chatting with %s. Type a message and press Enter; /save SEQ PATH saves a file; Ctrl-D or /quit to leave.", t.name)
		// Watch the peer's presence, without waiting: the chat works
		// offline too. The subscription is the account's contact list as
		// well ([S-15-2]), so it names every contact the profile knows,
		// the peer first.
		sctx, stopSubscribe := context.WithCancel(k.ctx)
		subscribed := make(chan struct{})
		go func() {
			defer close(subscribed)
			if err := k.c.Subscribe(sctx, k.contacts(t.user)); err != nil && sctx.Err() == nil {
				con.statusf("cannot follow %s's presence: %s", t.name, describe(err))
			}
		}()
		defer func() { stopSubscribe(); <-subscribed }()
	}

	notifier := newTypingNotifier(func(s pb.TypingState) { t.typing(k.c, s) })
	defer notifier.close()
	in, restore := readInput(k.ctx, e, con, notifier.edited)
	defer restore()
	// Files being saved (/save) stop when the chat ends.
	savesCtx, stopSaves := context.WithCancel(k.ctx)
	var saves sync.WaitGroup
	defer func() { stopSaves(); saves.Wait() }()
	for {
		select {
		case <-k.ctx.Done():
			return k.wait()
		case line, ok := <-in:
			cmd := strings.TrimSpace(line)
			switch {
			case !ok || cmd == "/quit":
				if n := ui.pending(); n > 0 {
					con.statusf("%d message(s) not yet sent: they go out with the next parley command of this profile.", n)
				}
				return nil
			case cmd == "":
				continue
			case strings.HasPrefix(cmd, "/save"):
				f := strings.Fields(cmd)
				seq, err := strconv.ParseUint(strings.Join(f[1:2], ""), 10, 64)
				if len(f) != 3 || err != nil {
					con.statusf("usage: /save SEQ PATH (SEQ is the number shown with the file)")
					continue
				}
				saves.Add(1)
				go func() {
					defer saves.Done()
					if dst, err := k.saveFile(savesCtx, seq, f[2]); err != nil {
						if savesCtx.Err() == nil {
							con.statusf("could not save the file: %s", describe(err))
						}
					} else {
						con.statusf("saved %s", dst)
					}
				}()
				continue
			case len(line) > protocol.MaxMessageBody:
				con.statusf("That message is longer than %d bytes; not sent.", protocol.MaxMessageBody)
				continue
			}
			m := ui.add(line)
			if _, err := t.sendAsync(k.c, []byte(line), pb.ContentType_CONTENT_TEXT, ui.onSent(m)); err != nil {
				ui.onSent(m)(client.Sent{}, err)
			}
		}
	}
}

// contacts returns the users whose presence chat follows: peer, then the
// contacts the profile knows, up to the protocol's limit.
func (k *conn) contacts(peer uint64) []uint64 {
	users := []uint64{peer}
	for key, v := range k.store.Attrs() {
		if strings.HasPrefix(key, attrContact) {
			if u, ok := parseUser(v); ok && !slices.Contains(users, u) && u != k.c.User() {
				users = append(users, u)
			}
		}
	}
	slices.Sort(users[1:])
	return users[:min(len(users), protocol.MaxPresenceSubscriptions)]
}

// chatUI is the state of the conversation on screen. Its methods are
// called from the input loop and from the client's event goroutine.
type chatUI struct {
	con    *console
	marker *readMarker
	typing *typingSeen

	mu        sync.Mutex        // guards the fields below
	me        uint64            // this user
	peer      uint64            // with --to: 0 until --to is resolved
	group     *client.GroupInfo // with --group
	mine      []*outMsg         // messages sent and not yet read by all (or failed), in order
	delivered uint64            // with --to: the highest DELIVERED up_to from peer ([S-10-4])
	read      uint64            // with --to: the highest READ up_to from peer
	marks     map[uint64][2]uint64
	presence  string // the presence last shown
}

// outMsg is a message the user typed.
type outMsg struct {
	text  string
	id    uint64 // from SENT; 0 before
	state msgState
	d, r  int // in a group: the members who received and read it, as last shown
}

func newChatUI(con *console, marker *readMarker) *chatUI {
	return &chatUI{con: con, marker: marker, typing: newTypingSeen(), marks: make(map[uint64][2]uint64)}
}

func (u *chatUI) setPeer(peer uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.peer = peer
}

// setGroup makes the chat one in group g, as user me.
func (u *chatUI) setGroup(g client.GroupInfo, me uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.group, u.me = &g, me
}

// groupID returns the chat's group, or 0.
func (u *chatUI) groupID() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.group == nil {
		return 0
	}
	return u.group.ID
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
		if u.group != nil {
			m.state = stateSent
			m.d, m.r = u.countLocked(m.id) // receipts may have come first
			u.con.printf("  %s %s: %s", u.con.groupMark(m.d, m.r, u.othersLocked()), u.con.when(s.Time), preview(m.text))
			u.pruneLocked()
			return
		}
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
	here := u.groupID()
	switch ev := ev.(type) {
	case client.Message:
		if ev.From == k.c.User() && ev.FromDevice == k.c.Device() {
			return // this device's own message: shown when it was sent ([S-8-17])
		}
		u.typing.stopped(ev.From)
		u.con.printf("%s", k.message(ev, here, "(/save %d PATH)"))
		if ev.From != k.c.User() {
			u.marker.mark(ev.Group, ev.From, ev.ID)
		}
	case client.Receipt:
		if ev.Type == pb.ReceiptType_RECEIPT_SELF_READ {
			u.marker.readElsewhere(ev.Group, ev.Peer, ev.UpTo)
		} else if ev.Group == 0 {
			u.receipt(ev)
		} else if ev.Group == here {
			u.groupReceipts(ev.Type, []client.ReceiptItem{{Peer: ev.Peer, UpTo: ev.UpTo}})
		}
	case client.Receipts:
		switch {
		case ev.Type == pb.ReceiptType_RECEIPT_SELF_READ:
			for _, it := range ev.Items {
				u.marker.readElsewhere(ev.Group, it.Peer, it.UpTo)
			}
		case ev.Group == here:
			u.groupReceipts(ev.Type, ev.Items)
		}
	case client.GroupEvent:
		u.con.printf("%s", k.groupEvent(ev))
		if ev.Group == here {
			u.mu.Lock()
			u.group.Apply(ev)
			_, member := u.group.Member(k.c.User())
			u.mu.Unlock()
			if !member {
				u.con.statusf("You are no longer a member of %s.", k.groupName(here))
			}
		}
	case client.IsTyping:
		u.mu.Lock()
		mine := (here == 0 && ev.Group == 0 && ev.From == u.peer) || (here != 0 && ev.Group == here)
		u.mu.Unlock()
		switch {
		case !mine:
		case ev.State == pb.TypingState_TYPING_STOPPED:
			u.typing.stopped(ev.From)
		case u.typing.started(ev.From):
			u.con.statusf("%s is typing…", k.names.of(ev.From))
		}
	case client.Presence:
		u.mu.Lock()
		show := ev.User == u.peer
		line := k.presence(ev)
		if show && line != u.presence {
			u.presence = line
		} else {
			show = false
		}
		u.mu.Unlock()
		if show {
			u.con.statusf("%s", line)
		}
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

// groupReceipts applies receipts of group members ([S-10-7]) and shows,
// for the messages whose counts changed, how many members have received
// and read them.
func (u *chatUI) groupReceipts(typ pb.ReceiptType, items []client.ReceiptItem) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, it := range items {
		v := u.marks[it.Peer]
		switch typ {
		case pb.ReceiptType_RECEIPT_DELIVERED:
			v[0] = max(v[0], it.UpTo)
		case pb.ReceiptType_RECEIPT_READ: // READ implies delivered
			v[0], v[1] = max(v[0], it.UpTo), max(v[1], it.UpTo)
		}
		u.marks[it.Peer] = v
	}
	var changed []*outMsg
	for _, m := range u.mine {
		if m.id == 0 || m.state == stateFailed {
			continue
		}
		if d, r := u.countLocked(m.id); d != m.d || r != m.r {
			m.d, m.r = d, r
			changed = append(changed, m)
		}
	}
	n := u.othersLocked()
	switch c := len(changed); {
	case c == 1:
		m := changed[0]
		u.con.printf("  %s: %s", u.con.groupMark(m.d, m.r, n), preview(m.text))
	case c > 1:
		m := changed[c-1]
		u.con.printf("  %s: %s (and %d before)", u.con.groupMark(m.d, m.r, n), preview(m.text), c-1)
	}
	u.pruneLocked()
}

// countLocked returns how many other members received and read message
// id, by their receipts.
func (u *chatUI) countLocked(id uint64) (d, r int) {
	for _, m := range u.group.Members {
		if v, ok := u.marks[m.User]; ok && m.User != u.me {
			if v[0] >= id {
				d++
			}
			if v[1] >= id {
				r++
			}
		}
	}
	return d, r
}

// othersLocked returns how many members the group has besides this user.
func (u *chatUI) othersLocked() int {
	if _, ok := u.group.Member(u.me); ok {
		return len(u.group.Members) - 1
	}
	return len(u.group.Members)
}

// pruneLocked forgets the messages at the front that can change no more:
// read (by every member, in a group) or failed.
func (u *chatUI) pruneLocked() {
	i := 0
	for i < len(u.mine) {
		m := u.mine[i]
		done := m.state == stateFailed || m.state == stateRead
		if u.group != nil && m.state == stateSent {
			done = m.r >= u.othersLocked()
		}
		if !done {
			break
		}
		u.mine[i] = nil
		i++
	}
	u.mine = u.mine[i:]
}

// readKey names a conversation's messages from one sender: group 0 for
// 1:1 messages.
type readKey struct{ group, peer uint64 }

// readMarker marks shown messages read, one READ per sender (per group)
// for everything shown since the last ([S-10-7]), without holding up the
// display, and not for messages this user read on another device
// ([S-10-6]).
type readMarker struct {
	con *console
	c   *client.Client // set before run

	mu      sync.Mutex         // guards pending and done
	pending map[readKey]uint64 // highest message id shown, not yet marked
	done    map[readKey]uint64 // highest id marked read, here or elsewhere
	kick    chan struct{}
}

func newReadMarker(con *console) *readMarker {
	return &readMarker{con: con, pending: make(map[readKey]uint64), done: make(map[readKey]uint64), kick: make(chan struct{}, 1)}
}

// mark records that message id from peer (in group, or 1:1 with group
// 0) has been shown.
func (r *readMarker) mark(group, peer, id uint64) {
	k := readKey{group, peer}
	r.mu.Lock()
	if id <= r.done[k] {
		r.mu.Unlock()
		return
	}
	r.pending[k] = max(r.pending[k], id)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// readElsewhere records that this user read peer's messages up to upTo
// on another device: no READ is sent for them.
func (r *readMarker) readElsewhere(group, peer, upTo uint64) {
	k := readKey{group, peer}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done[k] = max(r.done[k], upTo)
	if r.pending[k] <= upTo {
		delete(r.pending, k)
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

// flush sends the READs for everything shown since the last: one per
// 1:1 peer, and per group one per sender. What it cannot send stays
// pending.
func (r *readMarker) flush(ctx context.Context) {
	r.mu.Lock()
	todo := r.pending
	r.pending = make(map[readKey]uint64)
	r.mu.Unlock()
	groups := make(map[uint64]map[uint64]uint64)
	for k, id := range todo {
		if k.group != 0 {
			if groups[k.group] == nil {
				groups[k.group] = make(map[uint64]uint64)
			}
			groups[k.group][k.peer] = id
			continue
		}
		r.settle(ctx, map[readKey]uint64{k: id}, r.c.MarkRead(ctx, k.peer, id))
	}
	for g, upTo := range groups {
		keys := make(map[readKey]uint64, len(upTo))
		for peer, id := range upTo {
			keys[readKey{g, peer}] = id
		}
		r.settle(ctx, keys, r.c.MarkGroupRead(ctx, g, upTo))
	}
}

// settle records the outcome of marking keys read.
func (r *readMarker) settle(ctx context.Context, keys map[readKey]uint64, err error) {
	r.mu.Lock()
	for k, id := range keys {
		if err == nil {
			r.done[k] = max(r.done[k], id)
		} else if id > r.done[k] {
			r.pending[k] = max(r.pending[k], id)
		}
	}
	r.mu.Unlock()
	if err != nil && ctx.Err() == nil && !errors.Is(err, client.ErrClosed) {
		r.con.statusf("could not mark messages read: %s", describe(err))
	}
}
