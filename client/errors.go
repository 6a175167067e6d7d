package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/parley-im/parley/protocol"
)

// Sentinel errors. Callers branch on them with errors.Is; the errors the
// client returns wrap them with context.
var (
	// ErrClosed is returned by a Client that has stopped: Close was called,
	// or Run returned. A send still in the outbox stays in the Store and is
	// resent by the next Client opened on that Store.
	ErrClosed = errors.New("client: closed")

	// ErrRunning is returned by a second call of Run.
	ErrRunning = errors.New("client: Run already called")

	// ErrInvalid reports an argument the client refuses before anything is
	// sent: a bad phone number, an empty or oversized body, a zero user id.
	ErrInvalid = errors.New("client: invalid argument")

	// ErrOutboxFull is returned by Send and SendAsync when Config.MaxOutbox
	// sends are already waiting for the server's answer.
	ErrOutboxFull = errors.New("client: outbox full")

	// ErrNoAnswer is returned by a request that is not safe to repeat
	// (CreateGroup, RemoveGroupMembers, LeaveGroup, ApproveLink,
	// RevokeDevice) when the connection was lost after the request was
	// written and before its answer arrived: the server may or may not
	// have carried it out. Look (Groups, Group, Devices) before trying
	// again.
	ErrNoAnswer = errors.New("client: connection lost before the server answered; the request may have taken effect")

	// ErrFingerprint reports a server certificate that does not match
	// Config.Fingerprint. The client keeps retrying (a captive portal can
	// cause it); an interactive application usually stops and tells the user.
	ErrFingerprint = errors.New("client: server certificate does not match the pinned fingerprint")

	// ErrDeadConnection reports a connection dropped because no byte arrived
	// within Config.PongTimeout after a Ping (half-open TCP).
	ErrDeadConnection = errors.New("client: connection dead: no answer to ping")

	// ErrProtocol reports a server that broke the protocol: a frame that
	// could not be decoded or was not allowed at that point.
	ErrProtocol = errors.New("client: protocol violation by server")

	// ErrStoreMismatch is returned by New when the Store holds the state of
	// another device than the credentials name.
	ErrStoreMismatch = errors.New("client: store belongs to another device")

	// ErrLocked is returned by OpenFileStore when another process holds the
	// state file.
	ErrLocked = errors.New("client: state file in use by another process")
)

// ServerError is an Error or GoAway frame from the server. Its Code says
// what failed; protocol.LookupCode describes the code and the action a
// client takes, which this package carries out (retry, reconnect, stop).
type ServerError struct {
	// Code is the error code from protocol's error table.
	Code protocol.Code
	// Message is the server's text, for logs; it may be empty.
	Message string
	// RetryAfter is how long the server asks the client to wait before a
	// retry (Error.retry_after_ms) or a reconnect (GoAway.reconnect_after_ms).
	// Zero means the server named no delay.
	RetryAfter time.Duration
	// GoAway is true when the frame was GoAway rather than Error.
	GoAway bool
	// Devices are, with DEVICES_CHANGED, the current devices with keys of
	// the recipient and of the sender (spec [S-17-9]).
	Devices []UserDevices
}

// UserDevices names one user's devices.
type UserDevices struct {
	User    uint64
	Devices []uint32
}

// Error returns "client: server error CODE: message".
func (e *ServerError) Error() string {
	name := e.Code.String()
	if info, ok := protocol.LookupCode(e.Code); ok {
		name = info.Name
	}
	s := "client: server error " + name
	if e.GoAway {
		s = "client: server going away: " + name
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %v)", e.RetryAfter)
	}
	return s
}

// Fatal reports whether the code tells the client to stop reconnecting:
// UNSUPPORTED_VERSION, AUTH_FAILED, DEVICE_REVOKED or SESSION_REPLACED.
func (e *ServerError) Fatal() bool {
	switch e.Code {
	case protocol.CodeUnsupportedVersion, protocol.CodeAuthFailed,
		protocol.CodeDeviceRevoked, protocol.CodeSessionReplaced:
		return true
	}
	return false
}

// retryable reports whether a failed send or request is retried with the
// same cmid (or a new rid) after a delay: RATE_LIMITED, OVERLOADED,
// INTERNAL, STORAGE_FULL, INBOX_FULL, SHARD_UNAVAILABLE (a cluster's
// shard not served now), and message-scope codes this version does not know, which
// count as INTERNAL (spec [S-11-2]).
func (e *ServerError) retryable() bool {
	if protocol.Retried(e.Code) {
		return true
	}
	_, known := protocol.LookupCode(e.Code)
	return !known && protocol.ScopeOf(e.Code) == protocol.ScopeMessage
}

// CodeOf returns the code of the ServerError that err wraps, or 0 if err
// wraps none.
func CodeOf(err error) protocol.Code {
	var se *ServerError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// Retry describes one send or request the client will try again after
// the server refused it (Config.OnRetry): with a code that asks for a
// retry, or a send refused DEVICES_CHANGED, which the client encrypts
// again for the devices the refusal lists and sends again under the same
// cmid ([S-17-9]).
type Retry struct {
	// Request is the kind of the refused request; 0 for a send.
	Request protocol.Kind
	// CMID is the refused send's cmid; 0 for a request.
	CMID uint64
	// Err is the server's refusal.
	Err *ServerError
	// In is how long the client waits before it tries again; 0 after
	// DEVICES_CHANGED, where the send goes again as soon as it is
	// encrypted again.
	In time.Duration
}
