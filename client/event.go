package client

import (
	"time"

	"github.com/parley-im/parley/protocol/pb"
)

// Event is something the client reports to the application, through
// Config.OnEvent or the Events channel, in the order it happened. The set
// is closed: Connected, Disconnected, Fatal, Synced and SendDone about the
// connection and the outbox; Message, Receipt, Receipts and GroupEvent,
// the inbox entries, and those of the conversation controls (Revoked,
// Blocked, TimerChanged; controls.go); Presence and IsTyping, which are not stored. Later
// versions may add events: an application ignores the ones it does not
// know. Events own their memory; the application may keep them.
type Event interface {
	event()
}

// Connected reports a successful Login. The inbox stream follows.
type Connected struct {
	// ServerTime is the server's clock when it answered Login.
	ServerTime time.Time
	// Heartbeat is the longest the client may stay silent; the client
	// pings on its own.
	Heartbeat time.Duration
	// Window is how many inbox entries the server sends before it waits
	// for an Ack.
	Window int
	// Cursor is where the stream resumes: entries with a higher seq follow.
	Cursor uint64
}

// Disconnected reports a lost connection or a failed attempt to connect.
// The client tries again after RetryIn.
type Disconnected struct {
	// Err says why; it is never nil. errors.Is finds the sentinels
	// (ErrFingerprint, ErrDeadConnection, ErrProtocol) and CodeOf the code
	// of a server Error or GoAway.
	Err error
	// RetryIn is the delay before the next attempt.
	RetryIn time.Duration
}

// Fatal reports that the client stopped reconnecting because the server
// said so (UNSUPPORTED_VERSION, AUTH_FAILED, DEVICE_REVOKED,
// SESSION_REPLACED). Run returns Err. It is the last event.
type Fatal struct {
	// Err is a *ServerError; CodeOf gives its code.
	Err error
}

// Message is a message inbox entry: someone sent this user a message, or
// a group this user belongs to a message, or another device of this user
// sent a message (a copy). The kinds are told apart by their fields:
//
//   - Group == 0, To == 0: a 1:1 message from From to this user.
//   - Group != 0: a message From sent to the group, at place GSeq in the
//     group's order ([S-16-6]). From may be this user: its account has
//     several devices, and every device gets the group's whole sequence.
//   - To != 0: a copy of a 1:1 message this user (From) sent to To from
//     device FromDevice ([S-8-17]), so that every device shows the
//     conversation in one order.
//
// A device that sent a message itself (From is Client.User and FromDevice
// Client.Device) gets its copy too and must not show it twice.
type Message struct {
	// Seq is the entry's position in this user's inbox.
	Seq uint64
	// ID is the server's message id, unique and time-sortable.
	ID uint64
	// Time is when the server accepted the message (from ID).
	Time time.Time
	// From and FromDevice name the sender.
	From       uint64
	FromDevice uint32
	// Body is the opaque payload (1 to 64 KiB), owned by the event.
	Body []byte
	// Type is the sender's hint about the body's content.
	Type pb.ContentType
	// Group is the group of a group message; 0 otherwise.
	Group uint64
	// GSeq is a group message's place in the group's order; 0 otherwise.
	GSeq uint64
	// To is the recipient of a copy of this user's own 1:1 message; 0
	// otherwise.
	To uint64
	// Cipher says how the message was encrypted end to end on the wire;
	// CIPHER_NONE for a message that was not ([S-17-12]).
	Cipher pb.Cipher
	// Secure is true when the message was encrypted end to end, and Body
	// is the plaintext this client decrypted. A Secure message with no
	// Body and no DecryptErr carried nothing for this device: its own copy
	// of what it sent ([S-17-10]).
	Secure bool
	// DecryptErr, when not nil, says why an encrypted message could not be
	// decrypted (it wraps ErrUndecryptable); Body is then empty.
	DecryptErr error
	// TTL is, for a disappearing message, how long it lives after Time;
	// 0 otherwise ([S-18-10]).
	TTL time.Duration
	// Expires is when a disappearing message expires (Time + TTL): the
	// application deletes it then, and does not show it if that has
	// passed already (it can arrive late). Zero for other messages.
	Expires time.Time
	// Ref is the message this one replies to, reacts to (Type
	// CONTENT_REACTION) or edits (CONTENT_EDIT); 0 for none
	// ([S-18-11]). The application shows a reaction under its message
	// and an edit in place of its message's content, never as messages.
	Ref uint64
	// Forwarded is how many times the content was forwarded: 0 for an
	// original; show "forwarded many times" from 5.
	Forwarded uint32
}

// Receipt is a receipt inbox entry. RECEIPT_DELIVERED and RECEIPT_READ:
// Peer's devices received, or Peer read, every message this user sent to
// Peer (to Group, if set) with an id up to UpTo ([S-10-4]); READ implies
// delivered. RECEIPT_SELF_READ: this user read, on another of its devices,
// every message Peer sent to this user (to Group, if set) with an id up
// to UpTo; the application shows them as read and sends no READ for them
// ([S-10-6]). Receipts with a ReceiptType this version does not know are
// acknowledged without an event ([S-12-5]).
type Receipt struct {
	// Seq is the entry's position in this user's inbox.
	Seq uint64
	// Peer is the user whose devices received or read, or, for
	// SELF_READ, the user whose messages this user read.
	Peer uint64
	// Type is RECEIPT_DELIVERED, RECEIPT_READ or RECEIPT_SELF_READ.
	Type pb.ReceiptType
	// UpTo is a message id: every message up to it is covered.
	UpTo uint64
	// Group is the group whose messages are covered; 0 for 1:1 messages.
	// Version 1 servers send group receipts as Receipts instead.
	Group uint64
}

// Receipts is a receipts inbox entry: several receipts of one Type on
// messages of one Group, coalesced by the server ([S-16-8]). Each item
// means what a Receipt with this Group and Type and the item's Peer and
// UpTo means; a peer may appear more than once, and its highest UpTo
// counts.
type Receipts struct {
	// Seq is the entry's position in this user's inbox.
	Seq uint64
	// Group is the group whose messages the items cover.
	Group uint64
	// Type is RECEIPT_DELIVERED, RECEIPT_READ or RECEIPT_SELF_READ.
	Type pb.ReceiptType
	// Items are the receipts, in the server's order.
	Items []ReceiptItem
}

// ReceiptItem is one receipt of a Receipts entry.
type ReceiptItem struct {
	// Peer is the member who received or read (for SELF_READ: whose
	// messages this user read).
	Peer uint64
	// UpTo is a message id: every covered message up to it counts.
	UpTo uint64
}

// GroupEvent is a group-change inbox entry, in the group's order with its
// messages ([S-16-5]): a client keeps a group's state by applying them in
// GSeq order (GroupInfo.Apply does). An Op this version does not know is
// delivered too; the application ignores it or refreshes the group with
// Client.Group ([S-12-5]).
type GroupEvent struct {
	// Seq is the entry's position in this user's inbox.
	Seq uint64
	// ID is the server's id of the event, time-sortable like a message id.
	ID uint64
	// Time is when the server made the change (from ID).
	Time time.Time
	// Group is the group, GSeq the event's place in its order.
	Group, GSeq uint64
	// Actor is the user who made the change; 0 for the server (the
	// promotion that follows the last admin's LEAVE, [S-16-4]).
	Actor uint64
	// Op is what changed.
	Op pb.GroupOp
	// Members are the users added, removed, promoted or demoted; for
	// CREATE the creator, for LEAVE the user who left.
	Members []uint64
	// Name is the group's name, for CREATE and RENAME.
	Name string
	// Avatar is the group's avatar reference, for CREATE and SET_AVATAR.
	Avatar []byte
}

// Presence reports a subscribed user's presence ([S-15-1]): once for each
// user after every (re)subscription, including the one the client makes
// after each reconnect, then on every change, at most once a second per
// user. It is not an inbox entry.
type Presence struct {
	// User is the user whose presence this is.
	User uint64
	// Online is true while at least one of User's devices is connected.
	Online bool
	// LastSeen is when User's last device disconnected; zero while online,
	// when User was never seen, or when User's privacy hides it
	// ([S-15-5]).
	LastSeen time.Time
}

// IsTyping relays a typing indicator ([S-15-7]). It is not stored; an
// application shows "typing" for at most a few seconds (6 s is
// recommended) after the last TYPING_STARTED, since a TYPING_STOPPED can
// be lost ([S-15-8]).
type IsTyping struct {
	// From is the user who is typing.
	From uint64
	// Group is the group From is typing in; 0 when typing to this user.
	Group uint64
	// State is TYPING_STARTED or TYPING_STOPPED.
	State pb.TypingState
}

// Synced reports that the backlog waiting at Login has been delivered, up
// to Seq; later entries arrive live. It comes once per connection.
type Synced struct {
	// Seq is the highest seq sent before Synced, or the login cursor.
	Seq uint64
}

// SendDone reports the outcome of a send nobody waits for: one restored
// from the Store by New, one whose Send call gave up (its context ended),
// or one passed to SendAsync without a callback.
type SendDone struct {
	// Sent holds the cmid and, on success, the server's id and time.
	Sent
	// To is the recipient of a 1:1 send; 0 for a group send.
	To uint64
	// Group is the group of a group send; 0 for a 1:1 send.
	Group uint64
	// Err is nil on success, else a *ServerError with a final code
	// (NOT_FOUND, INVALID_ARGUMENT, MESSAGE_TOO_LARGE, …).
	Err error
}

func (Connected) event()    {}
func (Disconnected) event() {}
func (Fatal) event()        {}
func (Message) event()      {}
func (Receipt) event()      {}
func (Synced) event()       {}
func (SendDone) event()     {}
func (Receipts) event()     {}
func (GroupEvent) event()   {}
func (Presence) event()     {}
func (IsTyping) event()     {}
