package client

import (
	"context"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/fingerprint"
	"go.mau.fi/libsignal/groups"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/keys/prekey"
	signal "go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/serialize"
	signalsession "go.mau.fi/libsignal/session"
	"go.mau.fi/libsignal/util/keyhelper"
	"go.mau.fi/libsignal/util/optional"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// End-to-end encryption (spec.md section 17), with go.mau.fi/libsignal:
// X3DH and the Double Ratchet per device, sender keys per group. A Client
// whose Store is also a KeyStore (and Config.Plain is false) encrypts
// every Send and SendGroup and decrypts every Message before the
// application sees it; secure is that part of the Client.
//
// Sending to a user: the message is encrypted once per device of the
// recipient and per other device of this user (the device lists come
// from the key directory and are kept in the KeyStore), and sent as
// envelopes ([S-17-8]). The outbox keeps the ciphertexts, so a retry is
// identical ([S-17-9]), and the plaintext, so that a DEVICES_CHANGED
// answer can be met: the client learns the current lists from it, fetches
// the bundles it lacks, encrypts again and sends again under the same
// cmid, without the application noticing. A send made while the client
// is not logged in is encrypted only once it is (send_seal.go): the
// recipient's keys may have to be fetched first.
//
// Sending to a group: this device's sender key for the group goes, as a
// Content with sender_key, in 1:1 envelope sends to every device of every
// member that does not have it yet; once those are stored (SENT), the
// message is encrypted once with the sender key and sent as an ordinary
// group message ([S-17-14]). A REMOVE or LEAVE of the group, or a member
// device revoked, makes the next message start a new sender key.
//
// Threading: secure.mu serializes every use of the Signal state (one
// encryption or decryption at a time); it is never held during network
// I/O, and it is taken after Client.mu is released, never with it held.

// ErrNoKeys reports a user without any device with keys: nothing can be
// encrypted for it. Its devices publish keys when they first connect.
var ErrNoKeys = errors.New("client: the user has no device with keys (it has not connected since registering)")

// ErrUndecryptable is what Message.DecryptErr wraps when an encrypted
// message could not be decrypted: no session or sender key for its
// sender, or a message key already used.
var ErrUndecryptable = errors.New("client: the message could not be decrypted")

// Tunables of the end-to-end layer.
const (
	preKeyBatch       = 100                // one-time prekeys published at a time ([S-17-11])
	signedRotateAfter = 7 * 24 * time.Hour // signed prekey rotation ([S-17-2])
	maxReencrypt      = 5                  // DEVICES_CHANGED answers met before a send fails
	secureTimeout     = 60 * time.Second   // bound on the fetches and sends of one encryption
	maxRegistrationID = 16380              // as libsignal's keyhelper generates them
	fingerprintRounds = 5200               // iterations of the security code hash ([S-17-13])
	fingerprintPrefix = "\x00\x00"         // its version
	groupCacheTTL     = 10 * time.Minute   // group members are fetched again after this
	maxNotices        = 4096               // users whose last KEYS_CHANGED is remembered
)

type secure struct {
	c   *Client
	st  *signalStore
	ser *serialize.Serializer

	mu      sync.Mutex // serializes the Signal state; never held across I/O
	members map[uint64]groupMembers
	// notices is the device list of the last KEYS_CHANGED shown for each
	// user, in memory: a repeat (the same change by another route,
	// [S-17-5]) is not shown again. Guarded by mu.
	notices map[uint64][]uint32
	// pubMu serializes publish and refill, across their requests, so two
	// of them never make keys under the same ids. Taken before mu.
	pubMu sync.Mutex

	reseals atomic.Int64 // DEVICES_CHANGED answers met, for tests
}

// groupMembers is a group's member list as last fetched.
type groupMembers struct {
	users []uint64
	at    time.Time
}

// newSecure loads this device's identity from ks, making one on first use.
func newSecure(c *Client, ks KeyStore) (*secure, error) {
	ser := serialize.NewProtoBufSerializer()
	st := &signalStore{ks: ks, ser: ser}
	v, err := ks.LoadKey(keyIdentity)
	if err != nil {
		return nil, fmt.Errorf("client: load identity: %w", err)
	}
	if v == nil {
		kp, err := keyhelper.GenerateIdentityKeyPair()
		if err != nil {
			return nil, fmt.Errorf("client: make identity: %w", err)
		}
		reg := 1 + keyhelper.GenerateRegistrationID()%maxRegistrationID
		priv := kp.PrivateKey().Serialize()
		v = append(append(kp.PublicKey().Serialize(), priv[:]...), binary.AppendUvarint(nil, uint64(reg))...)
		if err := ks.SaveKey(keyIdentity, v); err != nil {
			return nil, fmt.Errorf("client: save identity: %w", err)
		}
	}
	if len(v) < protocol.KeyLen+32+1 || v[0] != ecc.DjbType {
		return nil, fmt.Errorf("client: corrupt identity record")
	}
	pub, err := ecc.DecodePoint(v[:protocol.KeyLen], 0)
	if err != nil {
		return nil, fmt.Errorf("client: identity: %w", err)
	}
	reg, _ := binary.Uvarint(v[protocol.KeyLen+32:])
	st.identity = identity.NewKeyPair(identity.NewKey(pub), ecc.NewDjbECPrivateKey([32]byte(v[protocol.KeyLen:protocol.KeyLen+32])))
	st.regID = uint32(reg)
	return &secure{c: c, st: st, ser: ser, members: map[uint64]groupMembers{}, notices: map[uint64][]uint32{}}, nil
}

func (e *secure) address(user uint64, device uint32) *signal.SignalAddress {
	return signal.NewSignalAddress(strconv.FormatUint(user, 10), device)
}

// publish publishes this device's keys the first time, and a new signed
// prekey once the current one is older than signedRotateAfter
// ([S-17-2], [S-17-11]). It runs when the client connects.
func (e *secure) publish(ctx context.Context) error {
	e.pubMu.Lock()
	defer e.pubMu.Unlock()
	e.mu.Lock()
	p, err := e.st.published()
	if err != nil {
		e.mu.Unlock()
		return err
	}
	now := e.c.cfg.Clock.Now()
	m := &pb.KeysPublish{}
	if !p.done {
		m.IdentityKey = e.st.identity.PublicKey().Serialize()
		m.RegistrationId = e.st.regID
	}
	if !p.done || now.Sub(time.UnixMilli(p.signedAtMS)) > signedRotateAfter {
		if m.SignedPrekey, err = e.newSignedPreKey(ctx, &p, now); err != nil {
			e.mu.Unlock()
			return err
		}
	}
	if !p.done {
		if m.Prekeys, err = e.newPreKeys(ctx, &p); err != nil {
			e.mu.Unlock()
			return err
		}
	}
	e.mu.Unlock()
	if m.SignedPrekey == nil && len(m.Prekeys) == 0 {
		return nil
	}
	if err := e.c.PublishKeys(ctx, m); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	p.done = true
	return e.st.savePublished(p)
}

// refill publishes a batch of one-time prekeys (PREKEYS_LOW, [S-17-6]).
func (e *secure) refill(ctx context.Context) error {
	e.pubMu.Lock()
	defer e.pubMu.Unlock()
	e.mu.Lock()
	p, err := e.st.published()
	var keys []*pb.PreKey
	if err == nil {
		keys, err = e.newPreKeys(ctx, &p)
	}
	e.mu.Unlock()
	if err != nil {
		return err
	}
	return e.c.PublishKeys(ctx, &pb.KeysPublish{Prekeys: keys})
}

// newSignedPreKey makes and stores the next signed prekey, recording it
// in p (which the caller saves).
func (e *secure) newSignedPreKey(ctx context.Context, p *published, now time.Time) (*pb.SignedPreKey, error) {
	r, err := keyhelper.GenerateSignedPreKey(e.st.identity, p.signedID+1, e.ser.SignedPreKeyRecord)
	if err != nil {
		return nil, err
	}
	if err := e.st.StoreSignedPreKey(ctx, r.ID(), r); err != nil {
		return nil, err
	}
	if p.signedID > 1 {
		_ = e.st.RemoveSignedPreKey(ctx, p.signedID-1) // keep the current and the previous
	}
	p.signedID, p.signedAtMS = r.ID(), now.UnixMilli()
	sig := r.Signature()
	if err := e.st.savePublished(*p); err != nil {
		return nil, err
	}
	return &pb.SignedPreKey{Id: r.ID(), Key: r.KeyPair().PublicKey().Serialize(), Signature: sig[:]}, nil
}

// newPreKeys makes and stores a batch of one-time prekeys with ids never
// used before.
func (e *secure) newPreKeys(ctx context.Context, p *published) ([]*pb.PreKey, error) {
	recs, err := keyhelper.GeneratePreKeys(int(p.nextPreKey), preKeyBatch, e.ser.PreKeyRecord)
	if err != nil {
		return nil, err
	}
	out := make([]*pb.PreKey, 0, len(recs))
	for _, r := range recs {
		if err := e.st.StorePreKey(ctx, r.ID().Value, r); err != nil {
			return nil, err
		}
		out = append(out, &pb.PreKey{Id: r.ID().Value, Key: r.KeyPair().PublicKey().Serialize()})
	}
	p.nextPreKey += preKeyBatch
	if err := e.st.savePublished(*p); err != nil {
		return nil, err
	}
	return out, nil
}

// devicesOf returns user's devices with keys, fetching the bundles of
// all of them when nothing is known yet.
func (e *secure) devicesOf(ctx context.Context, user uint64) ([]uint32, error) {
	e.mu.Lock()
	ids, known, err := e.st.devices(user)
	e.mu.Unlock()
	if err != nil || known {
		return ids, err
	}
	bundles, err := e.c.FetchKeys(ctx, user)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	ids = nil
	for _, b := range bundles {
		if user == e.c.creds.User && b.Device == e.c.creds.Device {
			continue
		}
		if err := e.startSession(ctx, user, b); err != nil {
			e.c.log.Warn("client: unusable key bundle", "user", user, "device", b.Device, "err", err)
			continue
		}
		ids = append(ids, b.Device)
	}
	if user == e.c.creds.User {
		ids = append(ids, e.c.creds.Device) // the list is the user's, this device included
		slices.Sort(ids)
	}
	return ids, e.st.setDevices(user, ids)
}

// ensureSessions fetches the bundles of the devices of user that have no
// session yet and starts sessions with them.
func (e *secure) ensureSessions(ctx context.Context, user uint64, devices []uint32) error {
	var missing []uint32
	e.mu.Lock()
	for _, d := range devices {
		ok, err := e.st.ContainsSession(ctx, e.address(user, d))
		if err != nil {
			e.mu.Unlock()
			return err
		}
		if !ok {
			missing = append(missing, d)
		}
	}
	e.mu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	bundles, err := e.c.FetchKeys(ctx, user, missing...)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range bundles {
		if err := e.startSession(ctx, user, b); err != nil {
			return fmt.Errorf("client: key bundle of %d/%d: %w", user, b.Device, err)
		}
	}
	return nil
}

// startSession checks a bundle and starts a session from it (X3DH):
// libsignal verifies the signed prekey's signature and that the identity
// is the one seen before for the device ([S-17-1], [S-17-13]). e.mu held.
func (e *secure) startSession(ctx context.Context, user uint64, b *pb.KeyBundle) error {
	sp := b.SignedPrekey
	if len(b.IdentityKey) != protocol.KeyLen || sp == nil || len(sp.Key) != protocol.KeyLen || len(sp.Signature) != protocol.SignatureLen ||
		(b.Prekey != nil && len(b.Prekey.Key) != protocol.KeyLen) {
		return fmt.Errorf("%w: malformed key bundle", ErrProtocol)
	}
	ik, err := ecc.DecodePoint(b.IdentityKey, 0)
	if err != nil {
		return err
	}
	spk, err := ecc.DecodePoint(sp.Key, 0)
	if err != nil {
		return err
	}
	pkID, pk := optional.NewEmptyUint32(), ecc.ECPublicKeyable(nil)
	if b.Prekey != nil {
		if pk, err = ecc.DecodePoint(b.Prekey.Key, 0); err != nil {
			return err
		}
		pkID = optional.NewOptionalUint32(b.Prekey.Id)
	}
	bundle := prekey.NewBundle(b.RegistrationId, b.Device, pkID, sp.Id, pk, spk, [64]byte(sp.Signature), identity.NewKey(ik))
	return signalsession.NewBuilderFromSignal(e.st, e.address(user, b.Device), e.ser).ProcessBundle(ctx, bundle)
}

// envelopesFor encrypts content for every device of user but this one.
// e.mu held.
func (e *secure) envelopesFor(ctx context.Context, user uint64, devices []uint32, content []byte) ([]Envelope, error) {
	var out []Envelope
	for _, d := range devices {
		if user == e.c.creds.User && d == e.c.creds.Device {
			continue
		}
		addr := e.address(user, d)
		ct, err := signalsession.NewCipher(signalsession.NewBuilderFromSignal(e.st, addr, e.ser), addr).Encrypt(ctx, content)
		if err != nil {
			return nil, fmt.Errorf("client: encrypt for %d/%d: %w", user, d, err)
		}
		c := pb.Cipher_CIPHER_SIGNAL
		if ct.Type() == signal.PREKEY_TYPE {
			c = pb.Cipher_CIPHER_SIGNAL_PREKEY
		}
		out = append(out, Envelope{Device: d, Body: ct.Serialize(), Cipher: c})
	}
	return out, nil
}

// seal fills o's envelopes: content encrypted for every device with keys
// of o.To and every other device of this user, fetching what it lacks.
func (e *secure) seal(ctx context.Context, o *Outgoing) error {
	to, err := e.devicesOf(ctx, o.To)
	if err != nil {
		return err
	}
	self := e.c.creds.User
	var own []uint32
	if o.To != self {
		if own, err = e.devicesOf(ctx, self); err != nil {
			return err
		}
	}
	if !slices.ContainsFunc(to, func(d uint32) bool { return o.To != self || d != e.c.creds.Device }) {
		return fmt.Errorf("%w: user %d", ErrNoKeys, o.To)
	}
	if err := e.ensureSessions(ctx, o.To, without(to, o.To == self, e.c.creds.Device)); err != nil {
		return err
	}
	if err := e.ensureSessions(ctx, self, without(own, true, e.c.creds.Device)); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if o.Envelopes, err = e.envelopesFor(ctx, o.To, to, o.Plain); err != nil {
		return err
	}
	if o.To != self {
		if o.Own, err = e.envelopesFor(ctx, self, own, o.Plain); err != nil {
			return err
		}
	}
	return nil
}

// without returns ids without device d when drop is set.
func without(ids []uint32, drop bool, d uint32) []uint32 {
	if !drop {
		return ids
	}
	return slices.DeleteFunc(slices.Clone(ids), func(x uint32) bool { return x == d })
}

// learnDevices records the device lists a DEVICES_CHANGED carried or a
// KEYS_CHANGED announced: sessions with devices no longer listed are
// dropped, and a group sender key handed to a device now gone is
// replaced before the next group message ([S-17-14]).
func (e *secure) learnDevices(user uint64, devices []uint32) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if user == e.c.creds.User && !slices.Contains(devices, e.c.creds.Device) {
		devices = append(slices.Clone(devices), e.c.creds.Device)
		slices.Sort(devices)
	}
	old, _, err := e.st.devices(user)
	if err != nil {
		return err
	}
	for _, d := range old {
		if slices.Contains(devices, d) {
			continue
		}
		if err := e.st.DeleteSession(context.Background(), e.address(user, d)); err != nil {
			return err
		}
		if err := e.forgetDevice(user, d); err != nil {
			return err
		}
	}
	return e.st.setDevices(user, devices)
}

// forgetDevice marks for rotation every group sender key that device d of
// user had. e.mu held.
func (e *secure) forgetDevice(user uint64, d uint32) error {
	groupsV, err := e.st.ks.LoadKey(keyGroupState + "index")
	if err != nil {
		return err
	}
	name := deviceName(user, d)
	for _, g := range readUvarints(groupsV, -1) {
		st, err := e.st.groupState(g)
		if err != nil {
			return err
		}
		if st.got[name] {
			st.rotate = true
			if err := e.st.saveGroupState(g, st); err != nil {
				return err
			}
		}
	}
	return nil
}

// reseal meets a DEVICES_CHANGED answer ([S-17-9]): it records the lists
// the server sent and encrypts o again for them.
func (e *secure) reseal(o *Outgoing, se *ServerError) error {
	e.reseals.Add(1)
	for _, ud := range se.Devices {
		if err := e.learnDevices(ud.User, ud.Devices); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(e.c.ctx, secureTimeout)
	defer cancel()
	o.Envelopes, o.Own = nil, nil
	return e.seal(ctx, o)
}

// groupChanged forgets a group's cached members and, after a REMOVE or
// LEAVE, marks this device's sender key for replacement ([S-17-14]).
func (e *secure) groupChanged(ev GroupEvent) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.members, ev.Group)
	switch ev.Op {
	case pb.GroupOp_GROUP_OP_REMOVE, pb.GroupOp_GROUP_OP_LEAVE:
		st, err := e.st.groupState(ev.Group)
		if err != nil {
			return err
		}
		st.rotate = true
		return e.st.saveGroupState(ev.Group, st)
	}
	return nil
}

// groupMembers returns a group's members, from a cache that group events
// invalidate.
func (e *secure) groupMembers(ctx context.Context, group uint64) ([]uint64, error) {
	e.mu.Lock()
	m, ok := e.members[group]
	e.mu.Unlock()
	if ok && e.c.cfg.Clock.Now().Sub(m.at) < groupCacheTTL {
		return m.users, nil
	}
	g, err := e.c.Group(ctx, group)
	if err != nil {
		return nil, err
	}
	users := make([]uint64, len(g.Members))
	for i, mem := range g.Members {
		users[i] = mem.User
	}
	e.mu.Lock()
	e.members[group] = groupMembers{users: users, at: e.c.cfg.Clock.Now()}
	e.mu.Unlock()
	return users, nil
}

// sealGroup encrypts o (a group message) with this device's sender key
// for the group, after handing the key to every member device that lacks
// it ([S-17-14]).
func (e *secure) sealGroup(ctx context.Context, o *Outgoing) error {
	members, err := e.groupMembers(ctx, o.Group)
	if err != nil {
		return err
	}
	name := signal.NewSenderKeyName(strconv.FormatUint(o.Group, 10), e.address(e.c.creds.User, e.c.creds.Device))
	builder := groups.NewGroupSessionBuilder(e.st, e.ser)

	e.mu.Lock()
	st, err := e.st.groupState(o.Group)
	if err == nil && st.rotate {
		// A new sender key: nobody has it yet.
		err = e.st.ks.SaveKey(senderKeyName(name), nil)
		st = groupState{got: map[string]bool{}}
	}
	var skdm []byte
	if err == nil {
		var m *signal.SenderKeyDistributionMessage
		if m, err = builder.Create(ctx, name); err == nil {
			skdm = m.Serialize()
		}
	}
	if err == nil {
		err = e.indexGroup(o.Group)
	}
	e.mu.Unlock()
	if err != nil {
		return err
	}

	content, err := proto.Marshal(&pb.Content{SenderKey: skdm, Group: o.Group})
	if err != nil {
		return err
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	users := slices.Clone(members)
	if !slices.Contains(users, e.c.creds.User) {
		users = append(users, e.c.creds.User)
	}
	var handed []string // devices that got the key, guarded by mu
	for _, u := range users {
		devices, err := e.devicesOf(ctx, u)
		if err != nil {
			return err
		}
		devices = without(devices, u == e.c.creds.User, e.c.creds.Device)
		if !slices.ContainsFunc(devices, func(d uint32) bool { return !st.got[deviceName(u, d)] }) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A 1:1 send of the key; its copy reaches this user's other
			// devices too. It is stored before the group message is sent,
			// so every device reads it first.
			_, err := e.c.sendContent(ctx, u, content)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("client: sender key to %d: %w", u, err))
				return
			}
			for _, d := range devices {
				handed = append(handed, deviceName(u, d))
			}
		}()
	}
	wg.Wait()
	for _, name := range handed {
		st.got[name] = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.st.saveGroupState(o.Group, st); err != nil {
		return err
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	ct, err := groups.NewGroupCipher(builder, name, e.st).Encrypt(ctx, o.Plain)
	if err != nil {
		return fmt.Errorf("client: group encrypt: %w", err)
	}
	o.Body, o.Cipher = ct.SignedSerialize(), pb.Cipher_CIPHER_SENDER_KEY
	return nil
}

// indexGroup remembers that this device has a sender key for group, for
// forgetDevice. e.mu held.
func (e *secure) indexGroup(group uint64) error {
	v, err := e.st.ks.LoadKey(keyGroupState + "index")
	if err != nil {
		return err
	}
	if slices.Contains(readUvarints(v, -1), group) {
		return nil
	}
	return e.st.ks.SaveKey(keyGroupState+"index", binary.AppendUvarint(v, group))
}

// open decrypts an encrypted Message: its Body becomes the plaintext. A
// message that only carried a sender key is applied and yields nil (no
// event). One that cannot be decrypted keeps no Body and says why in
// DecryptErr.
func (e *secure) open(m Message) *Message {
	if len(m.Body) == 0 {
		// Only a message sent as envelopes comes without a body: none was
		// for this device ([S-17-10]), the sender's own copy or a later
		// device.
		m.Secure = true
		return &m
	}
	if m.Cipher == pb.Cipher_CIPHER_NONE {
		return &m
	}
	m.Secure = true
	ctx := e.c.ctx
	e.mu.Lock()
	defer e.mu.Unlock()
	var plain []byte
	var err error
	switch m.Cipher {
	case pb.Cipher_CIPHER_SIGNAL, pb.Cipher_CIPHER_SIGNAL_PREKEY:
		plain, err = e.decrypt1(ctx, m)
	case pb.Cipher_CIPHER_SENDER_KEY:
		if m.From == e.c.creds.User && m.FromDevice == e.c.creds.Device {
			m.Body = nil // this device's own group message
			return &m
		}
		var sk *signal.SenderKeyMessage
		if sk, err = signal.NewSenderKeyMessageFromBytes(m.Body, e.ser.SenderKeyMessage); err == nil {
			name := signal.NewSenderKeyName(strconv.FormatUint(m.Group, 10), e.address(m.From, m.FromDevice))
			plain, err = groups.NewGroupCipher(groups.NewGroupSessionBuilder(e.st, e.ser), name, e.st).Decrypt(ctx, sk)
		}
	default:
		err = fmt.Errorf("unknown cipher %v", m.Cipher)
	}
	if err != nil {
		m.Body, m.DecryptErr = nil, fmt.Errorf("%w: %w", ErrUndecryptable, err)
		return &m
	}
	var c pb.Content
	if err := proto.Unmarshal(plain, &c); err != nil {
		m.Body, m.DecryptErr = nil, fmt.Errorf("%w: content: %w", ErrUndecryptable, err)
		return &m
	}
	if len(c.SenderKey) > 0 {
		e.applySenderKey(ctx, m, &c)
		if len(c.Body) == 0 {
			return nil
		}
	}
	m.Body = c.Body
	return &m
}

// decrypt1 decrypts a 1:1 envelope. e.mu held.
func (e *secure) decrypt1(ctx context.Context, m Message) ([]byte, error) {
	addr := e.address(m.From, m.FromDevice)
	cipher := signalsession.NewCipher(signalsession.NewBuilderFromSignal(e.st, addr, e.ser), addr)
	if m.Cipher == pb.Cipher_CIPHER_SIGNAL_PREKEY {
		pk, err := signal.NewPreKeySignalMessageFromBytes(m.Body, e.ser.PreKeySignalMessage, e.ser.SignalMessage)
		if err != nil {
			return nil, err
		}
		return cipher.DecryptMessage(ctx, pk)
	}
	sm, err := signal.NewSignalMessageFromBytes(m.Body, e.ser.SignalMessage)
	if err != nil {
		return nil, err
	}
	return cipher.Decrypt(ctx, sm)
}

// applySenderKey processes a sender key a member device handed this
// device for a group. e.mu held.
func (e *secure) applySenderKey(ctx context.Context, m Message, c *pb.Content) {
	skdm, err := signal.NewSenderKeyDistributionMessageFromBytes(c.SenderKey, e.ser.SenderKeyDistributionMessage)
	if err == nil {
		name := signal.NewSenderKeyName(strconv.FormatUint(c.Group, 10), e.address(m.From, m.FromDevice))
		err = groups.NewGroupSessionBuilder(e.st, e.ser).Process(ctx, name, skdm)
	}
	if err != nil {
		e.c.log.Warn("client: unusable sender key", "from", m.From, "device", m.FromDevice, "group", c.Group, "err", err)
	}
}

// securityCode computes the 60-digit security code of this user and user
// ([S-17-13]), from the identity keys of both users' devices with keys.
func (e *secure) securityCode(ctx context.Context, user uint64) (string, error) {
	keys := map[uint64][]byte{}
	for _, u := range []uint64{e.c.creds.User, user} {
		devices, err := e.devicesOf(ctx, u)
		if err != nil {
			return "", err
		}
		if err := e.ensureSessions(ctx, u, without(devices, u == e.c.creds.User, e.c.creds.Device)); err != nil {
			return "", err
		}
		e.mu.Lock()
		var all []byte
		for _, d := range devices {
			if u == e.c.creds.User && d == e.c.creds.Device {
				all = append(all, e.st.identity.PublicKey().Serialize()...)
				continue
			}
			k, err := e.st.ks.LoadKey(keyTrusted + deviceName(u, d))
			if err != nil || k == nil {
				e.mu.Unlock()
				return "", fmt.Errorf("client: no identity key for %d/%d: %v", u, d, err)
			}
			all = append(all, k...)
		}
		e.mu.Unlock()
		keys[u] = all
	}
	return SecurityCode(e.c.creds.User, keys[e.c.creds.User], user, keys[user]), nil
}

// SecurityCode returns the 60-digit security code of two users
// ([S-17-13]): each user's identity keys (all of its devices with keys,
// concatenated in device id order) and user id are hashed with SHA-512,
// 5200 times over, into 30 digits, and the two halves are shown lower
// first, so both users see the same code.
func SecurityCode(local uint64, localKeys []byte, remote uint64, remoteKeys []byte) string {
	return fingerprint.NewDisplay(fingerprintOf(local, localKeys), fingerprintOf(remote, remoteKeys)).DisplayText()
}

func fingerprintOf(user uint64, keys []byte) []byte {
	h := sha512.New()
	h.Write([]byte(fingerprintPrefix))
	h.Write(keys)
	h.Write(binary.BigEndian.AppendUint64(nil, user))
	sum := h.Sum(nil)
	for range fingerprintRounds {
		h.Reset()
		h.Write(sum)
		h.Write(keys)
		sum = h.Sum(sum[:0])
	}
	return sum[:30]
}

// observe handles an event on its way to the application, on the
// dispatcher's goroutine, in order: it decrypts a Message (nil when it
// only carried a sender key), publishes keys when the client connects or
// runs low, and learns from KEYS_CHANGED and group events.
func (e *secure) observe(ev Event) Event {
	ctx, cancel := context.WithTimeout(e.c.ctx, secureTimeout)
	defer cancel()
	var err error
	switch v := ev.(type) {
	case Message:
		if m := e.open(v); m != nil {
			return *m
		}
		return nil
	case Connected:
		err = e.publish(ctx)
	case PreKeysLow:
		if v.Device == e.c.creds.Device {
			err = e.refill(ctx)
		}
	case KeysChanged:
		if e.repeated(v) {
			return nil
		}
		err = e.learnDevices(v.User, v.Devices)
	case GroupEvent:
		err = e.groupChanged(v)
	}
	if err != nil && e.c.ctx.Err() == nil {
		e.c.log.Warn("client: end-to-end encryption", "event", fmt.Sprintf("%T", ev), "err", err)
	}
	return ev
}

// repeated reports whether kc repeats the last KEYS_CHANGED about its
// user, and records it.
func (e *secure) repeated(kc KeysChanged) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if last, ok := e.notices[kc.User]; ok && slices.Equal(last, kc.Devices) {
		return true
	}
	if len(e.notices) >= maxNotices {
		clear(e.notices)
	}
	e.notices[kc.User] = slices.Clone(kc.Devices)
	return false
}

// SecurityCode returns the 60-digit security code of this user and user
// ([S-17-13]): the same on both sides as long as neither user's devices
// with keys changed. Users compare it out of band; a KeysChanged event
// means it changed. It fails on a plain client.
func (c *Client) SecurityCode(ctx context.Context, user uint64) (string, error) {
	if c.sec == nil {
		return "", fmt.Errorf("%w: the client does not encrypt (Config.Plain or a Store without keys)", ErrInvalid)
	}
	return c.sec.securityCode(ctx, user)
}

// PublishDeviceKeys publishes this device's keys now, if it has not yet
// (the client also does so on its own when it connects), so that others
// can send to it at once: a registration tool calls it right after
// Verify or a link. It does nothing on a plain client.
func (c *Client) PublishDeviceKeys(ctx context.Context) error {
	if c.sec == nil {
		return nil
	}
	return c.sec.publish(ctx)
}
