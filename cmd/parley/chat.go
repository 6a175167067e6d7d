package main

import (
	"context"
	"errors"
	"fmt"
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
// announced while a line is typed. Lines starting with "/" are commands
// (chatHelp).
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
	defer ui.close()
	k, err := connect(ctx, &o, e, con, connectOptions{consume: true, interactive: true, handle: ui.handle})
	if err != nil {
		return err
	}
	defer k.close()
	ui.k, ui.me = k, k.c.User()
	defer ui.start(conversation{}) // events wait for the conversation; never past the chat's end
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

	t, err := k.target(*to, *group)
	if err != nil {
		return err
	}
	if t.group != 0 {
		cctx, cancel := k.call()
		g, err := k.c.Group(cctx, t.group)
		cancel()
		if err != nil {
			return k.reason(err)
		}
		k.rememberGroup(g.ID, g.Name)
		t.name = k.groupName(g.ID)
		ui.setGroup(g)
		con.statusf("Chatting in %s (%d members). %s", t.name, len(g.Members), chatIntro)
		ui.start(conversation{group: g.ID})
	} else {
		con.statusf("Chatting with %s. %s", t.name, chatIntro)
		ui.start(conversation{peer: t.user})
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
	// Commands that take a while (/save, /send-file, /approve) run on
	// goroutines of their own and stop when the chat ends.
	jobsCtx, stopJobs := context.WithCancel(k.ctx)
	ch := &chatCommands{k: k, t: t, ui: ui, ctx: jobsCtx}
	defer func() { stopJobs(); ch.jobs.Wait() }()
	for {
		select {
		case <-k.ctx.Done():
			return k.wait()
		case line, ok := <-in:
			cmd := strings.TrimSpace(line)
			switch {
			case !ok || ch.run(cmd):
				if n := ui.pending(); n > 0 {
					con.statusf("%d message(s) not yet sent: they go out with the next parley command of this profile.", n)
				}
				return nil
			case cmd == "" || strings.HasPrefix(cmd, "/") && !strings.HasPrefix(cmd, "//"):
				continue // a command, run above
			case strings.HasPrefix(cmd, "//"): // a message that starts with "/"
				i := strings.Index(line, "/")
				line = line[:i] + line[i+1:]
			}
			if len(line) > protocol.MaxMessageBody {
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

// chatIntro follows the first line of a chat.
const chatIntro = "Type a message and press Enter; /help lists the commands; Ctrl-D or /quit leaves."

// chatHelp is what /help shows.
const chatHelp = `Commands:
  /send-file PATH   send a file to this chat, encrypted end to end
  /save SEQ PATH    save the file of message SEQ (the number shown with it)
  /approve CODE     link the new device showing CODE to this account
  /help             this list
  /quit             leave the chat (or Ctrl-D on an empty line)`

// chatHelpEnd closes what /help shows, after the conversation controls.
const chatHelpEnd = `A line starting with // is sent as a message, with one / less.`

// chatCommands runs the commands typed in a chat: the profile is the
// chat's while it runs, so what another parley command would do is done
// here.
type chatCommands struct {
	k    *conn
	t    target
	ui   *chatUI
	ctx  context.Context // ends with the chat
	jobs sync.WaitGroup  // commands still running
}

// run runs cmd if it is a command (a line starting with one "/") and
// reports whether the chat is to end. Anything unknown is refused, never
// sent.
func (ch *chatCommands) run(cmd string) (quit bool) {
	if !strings.HasPrefix(cmd, "/") || strings.HasPrefix(cmd, "//") {
		return false
	}
	con := ch.k.con
	name, rest, _ := strings.Cut(cmd, " ")
	rest = strings.TrimSpace(rest)
	switch name {
	case "/quit":
		return true
	case "/help":
		con.statusf("%s\n%s\n%s", chatHelp, controlHelp, chatHelpEnd)
	case "/save":
		seqText, path, _ := strings.Cut(rest, " ")
		seq, err := strconv.ParseUint(seqText, 10, 64)
		if path = strings.TrimSpace(path); err != nil || path == "" {
			con.statusf("usage: /save SEQ PATH (SEQ is the number shown with the file)")
			return false
		}
		ch.background(func(ctx context.Context) {
			if dst, err := ch.k.saveFile(ctx, seq, path); err != nil {
				if ctx.Err() == nil {
					con.statusf("could not save the file: %s", describe(err))
				}
			} else {
				con.statusf("saved %s", dst)
			}
		})
	case "/send-file":
		if rest == "" {
			con.statusf("usage: /send-file PATH")
			return false
		}
		f, err := openOutFile(rest)
		if err != nil {
			con.statusf("cannot send that file: %v", err)
			return false
		}
		con.statusf("encrypting and uploading %s (%s)…", f.name, size(f.size))
		ch.background(func(ctx context.Context) {
			defer f.Close()
			body, err := ch.k.upload(ctx, f)
			if err != nil {
				if ctx.Err() == nil {
					con.statusf("could not send %s: %s", f.name, describe(err))
				}
				return
			}
			m := ch.ui.add(fmt.Sprintf("[%s, %s]", f.name, size(f.size)))
			if _, err := ch.t.sendAsync(ch.k.c, body, f.typ, ch.ui.onSent(m)); err != nil {
				ch.ui.onSent(m)(client.Sent{}, err)
			}
		})
	case "/approve":
		code, err := client.ParseLinkCode(rest)
		if err != nil {
			con.statusf("usage: /approve CODE (the %d letters and digits parley link shows on the new device)", protocol.LinkCodeLen)
			return false
		}
		ch.background(func(context.Context) {
			if line, err := ch.k.approve(code); err != nil {
				con.statusf("could not approve: %s", describe(err))
			} else {
				con.statusf("%s", line)
			}
		})
	default:
		if !ch.runControl(name, rest) {
			con.statusf("%s is not a command, so it was not sent: /help lists the commands; start the line with // to send it as a message.", sanitizeLine(name))
		}
	}
	return false
}

// background runs f on a goroutine of its own until it returns; its
// context ends with the chat.
func (ch *chatCommands) background(f func(context.Context)) {
	ch.jobs.Add(1)
	go func() {
		defer ch.jobs.Done()
		f(ch.ctx)
	}()
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
	k      *conn         // set before start
	me     uint64        // this user; set before start
	ready  chan struct{} // closed by start: events wait for it
	once   sync.Once

	mu        sync.Mutex        // guards the fields below
	here      conversation      // set by start
	group     *client.GroupInfo // with --group
	mine      []*outMsg         // messages sent and not yet read by all (or failed), in order
	delivered uint64            // with --to: the highest DELIVERED up_to from peer ([S-10-4])
	read      uint64            // with --to: the highest READ up_to from peer
	marks     map[uint64][2]uint64
	presence  string   // the presence last shown
	received  []lastIn // the last messages got here from others, oldest first (controls.go)
	lastSent  uint64   // the id of the last message this device sent here, not a control
}

// outMsg is a message the user typed.
type outMsg struct {
	text    string
	id      uint64 // from SENT; 0 before
	state   msgState
	d, r    int  // in a group: the members who received and read it, as last shown
	control bool // a reaction, an edit, a forward: not a message of this chat's own
}

func newChatUI(con *console, marker *readMarker) *chatUI {
	u := &chatUI{con: con, marker: marker, ready: make(chan struct{}), marks: make(map[uint64][2]uint64)}
	u.typing = newTypingSeen(func(user uint64) { u.typingNews(user, false, true) })
	return u
}

// start sets the conversation the chat shows and lets the events
// through: until then they wait, so none is shown before the chat knows
// whether it belongs to it. Only the first call counts.
func (u *chatUI) start(c conversation) {
	u.once.Do(func() {
		u.mu.Lock()
		u.here = c
		u.mu.Unlock()
		close(u.ready)
	})
}

// close stops the typing timers.
func (u *chatUI) close() { u.typing.close() }

// setGroup makes the chat one in group g.
func (u *chatUI) setGroup(g client.GroupInfo) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.group = &g
}

func (u *chatUI) conversation() conversation {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.here
}

// add records a message the user is sending.
func (u *chatUI) add(text string) *outMsg {
	return u.addMessage(text, false)
}

// addMessage records a message the user is sending, which is a control
// (a reaction, an edit, a forward, [S-18-11]) or not.
func (u *chatUI) addMessage(text string, control bool) *outMsg {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := &outMsg{text: text, control: control}
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
		if !m.control {
			u.lastSent = s.ID
			if u.k != nil {
				u.k.rememberSent(s.ID, u.me, m.text) // for quotes, edits and reactions
			}
		}
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
	<-u.ready
	here := u.conversation()
	me := k.c.User()
	switch ev := ev.(type) {
	case client.Message:
		if ev.From == me && ev.FromDevice == k.c.Device() {
			return // this device's own message: shown when it was sent ([S-8-17])
		}
		if k.gone(ev.Expires) {
			return // it disappeared before it arrived: never shown, answered or marked read ([S-18-10])
		}
		if here.holds(ev, me) && u.typing.stopped(ev.From) {
			u.typingNews(ev.From, false, false) // the message ends the spell
		}
		if ev.From != me && here.holds(ev, me) {
			// Before the line shows: a /react, /reply or /forward typed
			// once it is on screen must find it.
			u.got(ev)
		}
		if line := k.message(ev, here, "(/save %d PATH)"); line != "" {
			u.con.printf("%s", line)
		}
		if ev.From != me {
			u.marker.mark(ev.Group, ev.From, ev.ID)
		}
	case client.Receipt:
		if ev.Type == pb.ReceiptType_RECEIPT_SELF_READ {
			u.marker.readElsewhere(ev.Group, ev.Peer, ev.UpTo)
		} else if ev.Group == 0 {
			u.receipt(ev)
		} else if ev.Group == here.group {
			u.groupReceipts(ev.Type, []client.ReceiptItem{{Peer: ev.Peer, UpTo: ev.UpTo}})
		}
	case client.Receipts:
		switch {
		case ev.Type == pb.ReceiptType_RECEIPT_SELF_READ:
			for _, it := range ev.Items {
				u.marker.readElsewhere(ev.Group, it.Peer, it.UpTo)
			}
		case ev.Group == here.group && here.group != 0:
			u.groupReceipts(ev.Type, ev.Items)
		}
	case client.KeysChanged:
		u.con.statusf("%s", k.keysChanged(ev))
	case client.GroupEvent:
		u.con.printf("%s", k.groupEvent(ev))
		if ev.Group == here.group && here.group != 0 {
			u.mu.Lock()
			u.group.Apply(ev)
			_, member := u.group.Member(me)
			u.mu.Unlock()
			if !member {
				u.con.statusf("You are no longer a member of %s.", k.groupName(here.group))
			}
		}
	case client.IsTyping:
		mine := here.peer != 0 && ev.Group == 0 && ev.From == here.peer || here.group != 0 && ev.Group == here.group
		switch {
		case !mine || ev.From == me:
		case ev.State == pb.TypingState_TYPING_STOPPED:
			if u.typing.stopped(ev.From) {
				u.typingNews(ev.From, false, true)
			}
		case u.typing.started(ev.From):
			u.typingNews(ev.From, true, false)
		}
	case client.Presence:
		u.mu.Lock()
		show := ev.User == here.peer
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
	default:
		if r, ok := ev.(client.Revoked); ok {
			u.forget(r.ID)
		}
		if line, ok := k.controlEvent(ev); ok {
			u.con.printf("%s", line)
		}
	}
}

// forget drops a deleted message from those /react, /reply, /forward and
// /report name.
func (u *chatUI) forget(id uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.received = slices.DeleteFunc(u.received, func(m lastIn) bool { return m.id == id })
}

// got remembers a message got here from someone else, for /react,
// /reply, /forward and /report.
func (u *chatUI) got(ev client.Message) {
	if ev.Type == pb.ContentType_CONTENT_REACTION || ev.Type == pb.ContentType_CONTENT_EDIT {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.received = append(u.received, lastIn{id: ev.ID, from: ev.From, typ: ev.Type, body: ev.Body, forwards: ev.Forwarded, expires: ev.Expires})
	if len(u.received) > protocol.MaxReportMessages {
		u.received = u.received[1:]
	}
}

// lastMessages returns the last message got here from someone else and
// the id of the last message this device sent here (0 if none).
func (u *chatUI) lastMessages() (in lastIn, out uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if n := len(u.received); n > 0 {
		in = u.received[n-1]
	}
	return in, u.lastSent
}

// reportable returns the last messages got here from user that have not
// disappeared since.
func (u *chatUI) reportable(user uint64) []lastIn {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []lastIn
	for _, m := range u.received {
		if m.from == user && !u.k.gone(m.expires) { // what disappeared is not revealed ([S-18-10])
			out = append(out, m)
		}
	}
	return out
}

// typingNews shows that user started or stopped typing. When the command
// edits the line being typed, who is typing shows before it and goes
// away when they stop; otherwise a line says that user is typing, and
// another that they stopped (say), unless a message of theirs ended it.
func (u *chatUI) typingNews(user uint64, started, say bool) {
	k := u.k
	var names []string
	for _, t := range u.typing.typists() {
		names = append(names, k.names.of(t))
	}
	note := ""
	switch len(names) {
	case 0:
	case 1:
		note = names[0] + " is typing…"
	case 2:
		note = names[0] + " and " + names[1] + " are typing…"
	default:
		note = strconv.Itoa(len(names)) + " people are typing…"
	}
	if u.con.setNote(note) {
		return
	}
	switch {
	case started:
		u.con.statusf("%s is typing…", k.names.of(user))
	case say:
		u.con.statusf("%s stopped typing", k.names.of(user))
	}
}

// receipt applies a receipt from the peer to the messages it covers.
func (u *chatUI) receipt(r client.Receipt) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if r.Peer != u.here.peer || u.here.peer == 0 {
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
	u.showChangedLocked(changed, func(*outMsg) string { return u.con.mark(state) })
	u.pruneLocked()
}

// showChangedLocked prints the new marks of messages whose marks
// changed, in order: one line per distinct mark, naming the last message
// with it and how many before it share it.
func (u *chatUI) showChangedLocked(changed []*outMsg, mark func(*outMsg) string) {
	var order []string
	last := make(map[string]*outMsg)
	count := make(map[string]int)
	for _, m := range changed {
		k := mark(m)
		if count[k] == 0 {
			order = append(order, k)
		}
		count[k]++
		last[k] = m
	}
	for _, k := range order {
		if n := count[k]; n > 1 {
			u.con.printf("  %s: %s (and %d before)", k, preview(last[k].text), n-1)
		} else {
			u.con.printf("  %s: %s", k, preview(last[k].text))
		}
	}
}

// groupReceipts applies receipts of group members ([S-10-7]) and shows,
// for the messages whose counts changed, how many members have received
// and read them.
func (u *chatUI) groupReceipts(typ pb.ReceiptType, items []client.ReceiptItem) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.group == nil {
		return
	}
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
	u.showChangedLocked(changed, func(m *outMsg) string { return u.con.groupMark(m.d, m.r, n) })
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
