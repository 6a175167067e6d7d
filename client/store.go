package client

import (
	"bytes"
	"fmt"
	"slices"
	"sync"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Credentials authenticate one device of one user. They come from Verify
// and are kept in a Store.
type Credentials struct {
	// User is the account's user id (never 0).
	User uint64 `json:"user"`
	// Device is this device's id within the account.
	Device uint32 `json:"device"`
	// Secret is the 32-byte credential the server issued; it is shown only
	// once, so losing it means registering the device again.
	Secret []byte `json:"secret"`
}

// validate reports whether c can be used to log in.
func (c Credentials) validate() error {
	if c.User == 0 {
		return fmt.Errorf("%w: credentials name no user", ErrInvalid)
	}
	if len(c.Secret) != protocol.CredentialLen {
		return fmt.Errorf("%w: credential of %d bytes, want %d", ErrInvalid, len(c.Secret), protocol.CredentialLen)
	}
	return nil
}

// Outgoing is a send the server has not answered yet: the client resends
// it, identically, after every reconnect until it gets SENT or a final
// error.
type Outgoing struct {
	// CMID is the client message id, unique for the device and never reused.
	CMID uint64 `json:"cmid"`
	// To is the recipient's user id; 0 for a group message.
	To uint64 `json:"to"`
	// Group is the group of a group message; 0 for a 1:1 message. Exactly
	// one of To and Group is set.
	Group uint64 `json:"group,omitempty"`
	// Body is the message, 1 to 64 KiB; nobody modifies it once stored.
	Body []byte `json:"body"`
	// Type is the content type hint.
	Type pb.ContentType `json:"type,omitempty"`
	// Ref is the message this one replies to, reacts to or edits; 0 for
	// none ([S-18-11]).
	Ref uint64 `json:"ref,omitempty"`
	// Forwarded is how many times the content was forwarded; 0 for an
	// original.
	Forwarded uint32 `json:"forwarded,omitempty"`
	// Envelopes and Own carry a message encrypted per device instead of
	// Body (spec [S-17-8]): one per device of To, one per other device of
	// this user. Cipher says how Body is encrypted (a group message).
	Envelopes []Envelope `json:"envelopes,omitempty"`
	Own       []Envelope `json:"own,omitempty"`
	Cipher    pb.Cipher  `json:"cipher,omitempty"`
	// Plain is the plaintext (a serialized pb.Content) of a message the
	// client encrypted, kept until it is answered so that it can be
	// encrypted again for the current devices after DEVICES_CHANGED.
	Plain []byte `json:"plain,omitempty"`
}

// Envelope is one device's ciphertext of a message (spec [S-17-8]).
type Envelope struct {
	// Device is the device it is for.
	Device uint32 `json:"device"`
	// Body is the ciphertext.
	Body []byte `json:"body"`
	// Cipher says how it is encrypted.
	Cipher pb.Cipher `json:"cipher,omitempty"`
}

// State is what a Store keeps for one device.
type State struct {
	// Credentials are the device's; zero before SaveCredentials.
	Credentials Credentials `json:"credentials"`
	// Cursor is the highest inbox seq the application has processed.
	Cursor uint64 `json:"cursor"`
	// LastCMID is the highest client message id ever used: cmids are never
	// reused, so the next send takes a higher one.
	LastCMID uint64 `json:"last_cmid"`
	// Outbox holds the unanswered sends in cmid order.
	Outbox []Outgoing `json:"outbox,omitempty"`
}

// Store persists a device's State so that a restarted client resumes where
// it left off: same credentials, inbox cursor, cmid counter, and the sends
// that still need an answer. A Client calls its methods from several
// goroutines; implementations must be safe for concurrent use. A method
// returns only once its change is durable. The Client does not keep
// references to the slices it passes.
type Store interface {
	// Load returns the stored state. It is called once, by New.
	Load() (State, error)
	// SaveCredentials stores the device's credentials.
	SaveCredentials(Credentials) error
	// SaveCursor stores the inbox cursor. The Client calls it before it
	// acknowledges entries up to seq. seq grows, except when the server
	// puts the cursor back (spec [S-8-7]).
	SaveCursor(seq uint64) error
	// AddOutgoing stores a send before it is first written, and raises
	// LastCMID to its cmid if lower.
	AddOutgoing(Outgoing) error
	// RemoveOutgoing forgets the send with this cmid once the server has
	// answered it; LastCMID is unchanged.
	RemoveOutgoing(cmid uint64) error
}

// MemoryStore is a Store in memory, for tests and for clients that keep no
// state across restarts (a load generator). It is safe for concurrent use.
// The zero value is empty and ready to use.
type MemoryStore struct {
	mu sync.Mutex // guards st
	st State
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{} }

// Load returns a copy of the state.
func (m *MemoryStore) Load() (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.clone(), nil
}

// SaveCredentials implements Store.
func (m *MemoryStore) SaveCredentials(c Credentials) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st.Credentials = c.clone()
	return nil
}

// SaveCursor implements Store.
func (m *MemoryStore) SaveCursor(seq uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st.Cursor = seq
	return nil
}

// AddOutgoing implements Store.
func (m *MemoryStore) AddOutgoing(o Outgoing) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st.addOutgoing(o)
	return nil
}

// RemoveOutgoing implements Store.
func (m *MemoryStore) RemoveOutgoing(cmid uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st.removeOutgoing(cmid)
	return nil
}

// clone returns a deep copy of c.
func (c Credentials) clone() Credentials {
	c.Secret = bytes.Clone(c.Secret)
	return c
}

// clone returns a deep copy of st. Bodies are shared: nobody modifies them.
func (st State) clone() State {
	st.Credentials = st.Credentials.clone()
	st.Outbox = slices.Clone(st.Outbox)
	return st
}

// addOutgoing inserts o in cmid order, replacing a send with the same cmid,
// and raises LastCMID.
func (st *State) addOutgoing(o Outgoing) {
	st.LastCMID = max(st.LastCMID, o.CMID)
	i, found := slices.BinarySearchFunc(st.Outbox, o.CMID, func(x Outgoing, cmid uint64) int {
		return cmpUint64(x.CMID, cmid)
	})
	if found {
		st.Outbox[i] = o
		return
	}
	st.Outbox = slices.Insert(st.Outbox, i, o)
}

// removeOutgoing deletes the send with this cmid, if any.
func (st *State) removeOutgoing(cmid uint64) {
	st.Outbox = slices.DeleteFunc(st.Outbox, func(x Outgoing) bool { return x.CMID == cmid })
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
