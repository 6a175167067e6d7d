package client

import (
	"time"

	"github.com/parley-im/parley/protocol/pb"
)

// Event is something the client reports to the application, through
// Config.OnEvent or the Events channel, in the order it happened. The set
// is closed: Connected, Disconnected, Fatal, Message, Receipt, Synced and
// SendDone. Events own their memory; the application may keep them.
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

// Message is a message inbox entry: someone sent this user a message.
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
}

// Receipt is a receipt inbox entry: Peer's devices received (DELIVERED) or
// read (READ) every message this user sent to Peer with an id up to UpTo.
type Receipt struct {
	// Seq is the entry's position in this user's inbox.
	Seq uint64
	// Peer is the user whose devices received or read.
	Peer uint64
	// Type is RECEIPT_DELIVERED or RECEIPT_READ; READ implies delivered.
	Type pb.ReceiptType
	// UpTo is a message id: every message to Peer up to it is covered.
	UpTo uint64
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
	// To is the recipient.
	To uint64
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
