package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"

	groupRecord "go.mau.fi/libsignal/groups/state/record"
	"go.mau.fi/libsignal/keys/identity"
	signal "go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/serialize"
	"go.mau.fi/libsignal/state/record"
)

// KeyStore keeps a device's end-to-end encryption state: its key pairs,
// its Signal sessions, the identities it has seen, its sender keys, and
// what it knows of other users' devices (spec.md section 17.3). A Store
// that also implements KeyStore makes the Client encrypt end to end
// (Config.Plain). Values are opaque; a method returns once its change is
// durable. Implementations must be safe for concurrent use.
type KeyStore interface {
	// LoadKey returns the value stored under name, or nil if none.
	LoadKey(name string) ([]byte, error)
	// SaveKey stores value under name; a nil value deletes it.
	SaveKey(name string, value []byte) error
}

// MemoryKeyStore is a MemoryStore that is also a KeyStore: a Client on it
// encrypts end to end and forgets everything when the process ends
// (tests, load generators). The zero value is ready to use.
type MemoryKeyStore struct {
	MemoryStore
	mu   sync.Mutex // guards keys
	keys map[string][]byte
}

var _ KeyStore = (*MemoryKeyStore)(nil)

// NewMemoryKeyStore returns an empty MemoryKeyStore.
func NewMemoryKeyStore() *MemoryKeyStore { return &MemoryKeyStore{} }

// LoadKey implements KeyStore.
func (m *MemoryKeyStore) LoadKey(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.keys[name]), nil
}

// SaveKey implements KeyStore.
func (m *MemoryKeyStore) SaveKey(name string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if value == nil {
		delete(m.keys, name)
		return nil
	}
	if m.keys == nil {
		m.keys = make(map[string][]byte)
	}
	m.keys[name] = bytes.Clone(value)
	return nil
}

// Key names in a KeyStore.
const (
	keyIdentity   = "identity"   // identity key pair and registration id (encodeIdentity)
	keyPublished  = "published"  // what was published: next prekey id, signed prekey id and time
	keyPreKey     = "prekey/"    // + id: a one-time prekey record
	keySigned     = "signed/"    // + id: a signed prekey record
	keySession    = "session/"   // + user.device: a session record
	keyTrusted    = "trusted/"   // + user.device: the identity key seen for that device
	keySenderKey  = "senderkey/" // + group/user.device: a sender key record
	keyDevices    = "devices/"   // + user: the devices with keys last heard of (uvarints)
	keyGroupState = "group/"     // + group: our sender key's distribution (groupState)
)

// signalStore is libsignal's view of a KeyStore: every record it keeps,
// under the names above. Addresses are (user id, device id): a
// SignalAddress's name is the user id in decimal.
type signalStore struct {
	ks       KeyStore
	ser      *serialize.Serializer
	identity *identity.KeyPair
	regID    uint32
}

func addressName(a *signal.SignalAddress) string {
	return a.Name() + "." + strconv.FormatUint(uint64(a.DeviceID()), 10)
}

func deviceName(user uint64, device uint32) string {
	return strconv.FormatUint(user, 10) + "." + strconv.FormatUint(uint64(device), 10)
}

func idName(prefix string, id uint32) string { return prefix + strconv.FormatUint(uint64(id), 10) }

// GetIdentityKeyPair implements libsignal's IdentityKey store.
func (s *signalStore) GetIdentityKeyPair() *identity.KeyPair { return s.identity }

// GetLocalRegistrationID implements libsignal's IdentityKey store.
func (s *signalStore) GetLocalRegistrationID() uint32 { return s.regID }

// SaveIdentity records the identity key seen for an address.
func (s *signalStore) SaveIdentity(_ context.Context, a *signal.SignalAddress, k *identity.Key) error {
	return s.ks.SaveKey(keyTrusted+addressName(a), k.Serialize())
}

// IsTrustedIdentity trusts the first identity key seen for an address
// and only that one afterwards ([S-17-13]).
func (s *signalStore) IsTrustedIdentity(_ context.Context, a *signal.SignalAddress, k *identity.Key) (bool, error) {
	v, err := s.ks.LoadKey(keyTrusted + addressName(a))
	if err != nil {
		return false, err
	}
	return v == nil || bytes.Equal(v, k.Serialize()), nil
}

// LoadPreKey implements libsignal's PreKey store.
func (s *signalStore) LoadPreKey(_ context.Context, id uint32) (*record.PreKey, error) {
	v, err := s.ks.LoadKey(idName(keyPreKey, id))
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, fmt.Errorf("client: no one-time prekey %d (used already)", id)
	}
	return record.NewPreKeyFromBytes(v, s.ser.PreKeyRecord)
}

// StorePreKey implements libsignal's PreKey store.
func (s *signalStore) StorePreKey(_ context.Context, id uint32, r *record.PreKey) error {
	return s.ks.SaveKey(idName(keyPreKey, id), r.Serialize())
}

// ContainsPreKey implements libsignal's PreKey store.
func (s *signalStore) ContainsPreKey(_ context.Context, id uint32) (bool, error) {
	v, err := s.ks.LoadKey(idName(keyPreKey, id))
	return v != nil, err
}

// RemovePreKey implements libsignal's PreKey store.
func (s *signalStore) RemovePreKey(_ context.Context, id uint32) error {
	return s.ks.SaveKey(idName(keyPreKey, id), nil)
}

// LoadSignedPreKey implements libsignal's SignedPreKey store.
func (s *signalStore) LoadSignedPreKey(_ context.Context, id uint32) (*record.SignedPreKey, error) {
	v, err := s.ks.LoadKey(idName(keySigned, id))
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, fmt.Errorf("client: no signed prekey %d", id)
	}
	return record.NewSignedPreKeyFromBytes(v, s.ser.SignedPreKeyRecord)
}

// LoadSignedPreKeys implements libsignal's SignedPreKey store: the
// current one and the previous one, which this client keeps.
func (s *signalStore) LoadSignedPreKeys(ctx context.Context) ([]*record.SignedPreKey, error) {
	p, err := s.published()
	if err != nil {
		return nil, err
	}
	var out []*record.SignedPreKey
	for _, id := range []uint32{p.signedID - 1, p.signedID} {
		if id == 0 {
			continue
		}
		if r, err := s.LoadSignedPreKey(ctx, id); err == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// StoreSignedPreKey implements libsignal's SignedPreKey store.
func (s *signalStore) StoreSignedPreKey(_ context.Context, id uint32, r *record.SignedPreKey) error {
	return s.ks.SaveKey(idName(keySigned, id), r.Serialize())
}

// ContainsSignedPreKey implements libsignal's SignedPreKey store.
func (s *signalStore) ContainsSignedPreKey(_ context.Context, id uint32) (bool, error) {
	v, err := s.ks.LoadKey(idName(keySigned, id))
	return v != nil, err
}

// RemoveSignedPreKey implements libsignal's SignedPreKey store.
func (s *signalStore) RemoveSignedPreKey(_ context.Context, id uint32) error {
	return s.ks.SaveKey(idName(keySigned, id), nil)
}

// LoadSession returns the session with an address, a fresh one if none.
func (s *signalStore) LoadSession(_ context.Context, a *signal.SignalAddress) (*record.Session, error) {
	v, err := s.ks.LoadKey(keySession + addressName(a))
	if err != nil {
		return nil, err
	}
	if v == nil {
		return record.NewSession(s.ser.Session, s.ser.State), nil
	}
	return record.NewSessionFromBytes(v, s.ser.Session, s.ser.State)
}

// GetSubDeviceSessions is not used by this client.
func (s *signalStore) GetSubDeviceSessions(context.Context, string) ([]uint32, error) {
	return nil, errors.New("client: GetSubDeviceSessions is not supported")
}

// StoreSession implements libsignal's Session store.
func (s *signalStore) StoreSession(_ context.Context, a *signal.SignalAddress, r *record.Session) error {
	return s.ks.SaveKey(keySession+addressName(a), r.Serialize())
}

// ContainsSession implements libsignal's Session store.
func (s *signalStore) ContainsSession(_ context.Context, a *signal.SignalAddress) (bool, error) {
	v, err := s.ks.LoadKey(keySession + addressName(a))
	return v != nil, err
}

// DeleteSession implements libsignal's Session store.
func (s *signalStore) DeleteSession(_ context.Context, a *signal.SignalAddress) error {
	return s.ks.SaveKey(keySession+addressName(a), nil)
}

// DeleteAllSessions is not used by this client.
func (s *signalStore) DeleteAllSessions(context.Context) error {
	return errors.New("client: DeleteAllSessions is not supported")
}

func senderKeyName(n *signal.SenderKeyName) string {
	return keySenderKey + n.GroupID() + "/" + addressName(n.Sender())
}

// StoreSenderKey implements libsignal's SenderKey store.
func (s *signalStore) StoreSenderKey(_ context.Context, n *signal.SenderKeyName, r *groupRecord.SenderKey) error {
	return s.ks.SaveKey(senderKeyName(n), r.Serialize())
}

// LoadSenderKey returns a sender key record, an empty one if none.
func (s *signalStore) LoadSenderKey(_ context.Context, n *signal.SenderKeyName) (*groupRecord.SenderKey, error) {
	v, err := s.ks.LoadKey(senderKeyName(n))
	if err != nil {
		return nil, err
	}
	if v == nil {
		return groupRecord.NewSenderKey(s.ser.SenderKeyRecord, s.ser.SenderKeyState), nil
	}
	return groupRecord.NewSenderKeyFromBytes(v, s.ser.SenderKeyRecord, s.ser.SenderKeyState)
}

// published is what this device has published ([S-17-2]).
type published struct {
	nextPreKey uint32 // the id of the next one-time prekey to make
	signedID   uint32 // the current signed prekey; 0 before the first publish
	signedAtMS int64  // when it was made, Unix ms
	done       bool   // the server has the identity and signed prekey
}

func (s *signalStore) published() (published, error) {
	var p published
	v, err := s.ks.LoadKey(keyPublished)
	if err != nil || v == nil {
		return published{nextPreKey: 1}, err
	}
	fields := readUvarints(v, 4)
	if len(fields) != 4 {
		return p, fmt.Errorf("client: corrupt %s record", keyPublished)
	}
	return published{nextPreKey: uint32(fields[0]), signedID: uint32(fields[1]), signedAtMS: int64(fields[2]), done: fields[3] == 1}, nil
}

func (s *signalStore) savePublished(p published) error {
	done := uint64(0)
	if p.done {
		done = 1
	}
	return s.ks.SaveKey(keyPublished, appendUvarints(nil, uint64(p.nextPreKey), uint64(p.signedID), uint64(p.signedAtMS), done))
}

// devices returns the devices with keys last heard of for user, and
// whether anything was heard.
func (s *signalStore) devices(user uint64) ([]uint32, bool, error) {
	v, err := s.ks.LoadKey(keyDevices + strconv.FormatUint(user, 10))
	if err != nil || v == nil {
		return nil, false, err
	}
	var ids []uint32
	for _, d := range readUvarints(v[1:], -1) {
		ids = append(ids, uint32(d))
	}
	return ids, true, nil
}

// setDevices records user's devices with keys.
func (s *signalStore) setDevices(user uint64, ids []uint32) error {
	v := []byte{1} // a marker, so an empty list is not "never heard"
	for _, d := range ids {
		v = binary.AppendUvarint(v, uint64(d))
	}
	return s.ks.SaveKey(keyDevices+strconv.FormatUint(user, 10), v)
}

// groupState is what this device did with its sender key of one group.
type groupState struct {
	rotate bool            // create a new sender key before the next message
	got    map[string]bool // user.device names that have the current key
}

func (s *signalStore) groupState(group uint64) (groupState, error) {
	st := groupState{got: map[string]bool{}}
	v, err := s.ks.LoadKey(keyGroupState + strconv.FormatUint(group, 10))
	if err != nil || v == nil {
		return st, err
	}
	st.rotate = v[0] == 1
	for _, name := range bytes.Split(v[1:], []byte{','}) {
		if len(name) > 0 {
			st.got[string(name)] = true
		}
	}
	return st, nil
}

func (s *signalStore) saveGroupState(group uint64, st groupState) error {
	v := []byte{0}
	if st.rotate {
		v[0] = 1
	}
	for i, name := range sortedKeys(st.got) {
		if i > 0 {
			v = append(v, ',')
		}
		v = append(v, name...)
	}
	return s.ks.SaveKey(keyGroupState+strconv.FormatUint(group, 10), v)
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range maps.Keys(m) {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func appendUvarints(dst []byte, vs ...uint64) []byte {
	for _, v := range vs {
		dst = binary.AppendUvarint(dst, v)
	}
	return dst
}

// readUvarints reads up to n uvarints (all, for n < 0); it stops at the
// first malformed one.
func readUvarints(b []byte, n int) []uint64 {
	var out []uint64
	for len(b) > 0 && (n < 0 || len(out) < n) {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			break
		}
		out = append(out, v)
		b = b[k:]
	}
	return out
}
