package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// cmdLookup prints the user id of each registered phone number.
func cmdLookup(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("lookup", e)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("lookup needs phone numbers, like parley lookup +15551234567")
	}
	if len(pos) > protocol.MaxLookupPhones {
		return usagef("lookup takes at most %d numbers at once", protocol.MaxLookupPhones)
	}
	phones := make([]string, len(pos))
	for i, p := range pos {
		if phones[i], err = normalisePhone(p); err != nil {
			return err
		}
	}
	con := newConsole(e, o.plain)
	k, err := connect(ctx, &o, e, con, connectOptions{})
	if err != nil {
		return err
	}
	defer k.close()
	cctx, cancel := k.call()
	defer cancel()
	contacts, err := k.c.Lookup(cctx, phones)
	if err != nil {
		return k.reason(err)
	}
	k.remember(contacts)
	users := make(map[string]uint64, len(contacts))
	for _, ct := range contacts {
		users[ct.Phone] = ct.User
	}
	for _, p := range phones {
		if u, ok := users[p]; ok {
			con.printf("%s\t%d", p, u)
		} else {
			con.printf("%s\tnot registered", p)
		}
	}
	return nil
}

// cmdSend sends one message and waits until the server has stored it.
func cmdSend(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("send", e)
	to := fs.String("to", "", "")
	group := fs.String("group", "", "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if (*to == "") == (*group == "") {
		return usagef("send needs --to USER, --to +NUMBER or --group GROUP")
	}
	text := strings.Join(pos, " ")
	if len(pos) == 0 {
		b, err := io.ReadAll(io.LimitReader(e.stdin, protocol.MaxMessageBody+1))
		if err != nil {
			return err
		}
		text = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	}
	switch {
	case strings.TrimSpace(text) == "":
		return usagef("send: the message is empty")
	case len(text) > protocol.MaxMessageBody:
		return usagef("send: the message is longer than %d bytes", protocol.MaxMessageBody)
	}

	con := newConsole(e, o.plain)
	k, err := connect(ctx, &o, e, con, connectOptions{})
	if err != nil {
		return err
	}
	defer k.close()
	t, err := k.target(*to, *group)
	if err != nil {
		return err
	}
	cctx, cancel := k.call()
	defer cancel()
	sent, err := t.send(cctx, k.c, []byte(text), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		return k.sendFailed(sent, err)
	}
	con.printf("%s to %s at %s (id %d)", con.mark(stateSent), t.name, con.when(sent.Time), sent.ID)
	return nil
}

// sendFailed explains why a one-shot send did not complete, and whether
// the message stays in the profile's outbox: it does when it was stored
// and the command stopped waiting (sent has its cmid).
func (k *conn) sendFailed(sent client.Sent, err error) error {
	const later = "the message stays queued and goes out with the next parley command of this profile"
	queued := sent.CMID != 0 && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
	cause := k.reason(err)
	var ue *unreachableError
	// An encrypting client that is connected encrypts a message before it
	// stores it, which may take the recipient's keys from the server
	// (spec.md section 17): a message that got no cmid was not queued. One
	// made while not connected is queued and encrypted later.
	const notSent = "the message could not be encrypted, for want of the recipient's keys, and was not sent"
	unqueued := sent.CMID == 0 && k.c.Encrypted() && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
	switch {
	case queued && errors.As(cause, &ue):
		return fmt.Errorf("%s; %s", ue.Error(), later)
	case queued && errors.Is(err, context.DeadlineExceeded) && k.ctx.Err() == nil:
		return fmt.Errorf("no answer from the server within %v; %s", k.o.timeout, later)
	case unqueued && errors.As(cause, &ue):
		return fmt.Errorf("%s; %s", ue.Error(), notSent)
	case unqueued && errors.Is(err, context.DeadlineExceeded) && k.ctx.Err() == nil:
		return fmt.Errorf("no answer from the server within %v; %s", k.o.timeout, notSent)
	}
	return cause
}

// showReceipt prints a receipt on this user's messages.
func (k *conn) showReceipt(group uint64, typ pb.ReceiptType, peer, upTo uint64) {
	state := stateDelivered
	if typ == pb.ReceiptType_RECEIPT_READ {
		state = stateRead
	}
	where := ""
	if group != 0 {
		where = " in " + k.groupName(group)
	}
	k.con.printf("[%s] %s by %s%s: your messages up to %s", k.con.when(k.con.now()), k.con.mark(state), k.names.of(peer), where, k.con.when(protocol.MessageTime(upTo)))
}

// cmdListen prints incoming messages and receipts until interrupted.
func cmdListen(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("listen", e)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("listen: unexpected argument %q", pos[0])
	}
	con := newConsole(e, o.plain)
	k, err := connect(ctx, &o, e, con, connectOptions{consume: true, interactive: true, handle: func(k *conn, ev client.Event) {
		switch ev := ev.(type) {
		case client.Message:
			if ev.From == k.c.User() && ev.FromDevice == k.c.Device() {
				return // sent from here: shown by the command that sent it ([S-8-17])
			}
			if line := k.message(ev, conversation{}, "(parley save-file %d PATH)"); line != "" {
				con.printf("%s", line)
			}
		case client.Receipt:
			if ev.Type != pb.ReceiptType_RECEIPT_SELF_READ {
				k.showReceipt(ev.Group, ev.Type, ev.Peer, ev.UpTo)
			}
		case client.Receipts:
			if ev.Type != pb.ReceiptType_RECEIPT_SELF_READ {
				for _, it := range ev.Items {
					k.showReceipt(ev.Group, ev.Type, it.Peer, it.UpTo)
				}
			}
		case client.GroupEvent:
			con.printf("%s", k.groupEvent(ev))
		case client.Synced:
			con.statusf("up to date")
		default:
			if line, ok := k.controlEvent(ev); ok {
				con.printf("%s", line)
			}
		}
	}})
	if err != nil {
		return err
	}
	defer k.close()
	return k.wait()
}
