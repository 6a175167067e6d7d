package loadtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// groupEnvelopesScenario is the groups scenario with end-to-end
// encryption's group model, sender keys (spec.md [S-17-14]): every device
// publishes keys; before its first group message, each sending device
// hands its sender key to every other member in a 1:1 envelope SEND, one
// envelope per device of the member and, as [S-17-9] requires, one per
// other device of its own user (so its companions get a copy of each);
// then each group message is one sender key ciphertext, which the server
// fans out as any group message. As in the envelopes scenario the
// ciphertexts are random bytes of the sizes libsignal gives (a prekey
// message carrying a sender key distribution, senderKeyEnvelope; a
// sender key message, senderKeyOverhead more than the text), not real
// ones: the server never reads them.
//
// Every device checks its own streams: each distribution it is owed
// arrives once (from each other sender of its groups, and on a sender's
// companion a copy of each of its primary's), in order, and each group
// message once, in order and at the same gseq as for every other device.
// The distribution is a step of its own, outside the measured traffic;
// Result.KeyDistribution reports its sends, deliveries and bytes.
var groupEnvelopesScenario = Scenario{
	Name:    groupEnvelopesName,
	Summary: "groups whose members have --devices devices, end to end: sender keys handed out in 1:1 envelopes, then one sender key ciphertext per group message",
	Steps:   func(cfg *Config) []Step { return groupSteps(cfg, true) },
}

// groupEnvelopesName names the group-envelopes scenario.
const groupEnvelopesName = "group-envelopes"

// Sizes of libsignal's ciphertexts (go.mau.fi/libsignal v0.2.1, measured
// by serializing them): a sender key distribution message (78 bytes,
// 83 in its Content) encrypted as the first message of a session, a
// PreKeySignalMessage, is 230 bytes (146 once the session is
// established); a sender key message is the Content (the text and 2
// bytes) encrypted and padded to the AES block, with its header and a
// 64-byte signature: 107 bytes for a 20-byte text, 87 more than the text.
const (
	senderKeyEnvelope = 230
	senderKeyOverhead = 87
)

// keyTarget is a member a sender hands its sender key to: its user and
// its devices.
type keyTarget struct {
	user    uint64
	devices []uint32
}

// keySource names the 1:1 messages a device gets from one sender to one
// recipient: To is 0 in the recipient's own inbox, and the recipient in a
// copy for the sender's other devices ([S-8-17]). Only the messages of
// one source have an order ([S-8-13]): the copies of sends to different
// recipients are stored in no particular order.
type keySource struct{ From, To uint64 }

// keysIn is what a device is owed from one source: the cmids of the sends
// that carry a sender key to it, and their ledger.
type keysIn struct {
	want map[uint64]bool
	flow direction
}

// planKeys sets what device d, of the account at member position k of
// group g, sends and expects in the sender keys' distribution: a sending
// primary hands its key to the other members in member order (its cmid
// i+1 to the i-th of them); each device is owed one send from every other
// sender of the group, and a sender's companion a copy of each of its
// primary's sends.
func (gw *groupWorker) planKeys(d *device, dg *deviceGroups, g, k int) {
	p := gw.plan
	for s := range p.senders {
		sender := gw.users[p.member(g, s)]
		if s == k {
			if d.primary == nil {
				for o := range p.size {
					if o != k {
						i := p.member(g, o)
						dg.keysTo = append(dg.keysTo, keyTarget{user: gw.users[i], devices: gw.devices[i]})
					}
				}
				continue
			}
			// A copy of each of its primary's sends.
			cmid := 0
			for o := range p.size {
				if o != k {
					cmid++
					dg.keysFrom(keySource{From: sender, To: gw.users[p.member(g, o)]}).want[uint64(cmid)] = true
				}
			}
			continue
		}
		cmid := k + 1 // the sender skips itself
		if k > s {
			cmid = k
		}
		dg.keysFrom(keySource{From: sender}).want[uint64(cmid)] = true
	}
}

// keysFrom returns what is owed from src, made on first use.
func (dg *deviceGroups) keysFrom(src keySource) *keysIn {
	ki := dg.keys[src]
	if ki == nil {
		ki = &keysIn{want: map[uint64]bool{}}
		dg.keys[src] = ki
	}
	return ki
}

// distribute hands out the sender keys: each sending primary here sends
// its distribution to every other member, InFlight at a time; the step
// ends when they are answered and every device here has what it is owed,
// or after the drain timeout (what is missing then counts as lost).
func (gw *groupWorker) distribute(ctx context.Context, w *Worker) error {
	cfg := &w.spec.Config
	ctx, cancel := context.WithTimeout(ctx, cfg.DrainTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		p := trafficPlan{end: time.Now().Add(cfg.DrainTimeout), count: int(gw.skip), inFlight: cfg.InFlight, keys: true}
		_ = w.forEach(ctx, len(w.devices), w.keySender, func(ctx context.Context, d *device) error {
			d.sendLoop(ctx, p)
			return nil
		})
	}()
	for {
		n := gw.keysMissing(w)
		for _, d := range w.devices {
			d.mu.Lock()
			n += int64(len(d.unacked))
			d.mu.Unlock()
		}
		if n == 0 {
			break
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			if w.ctx.Err() != nil {
				return w.ctx.Err()
			}
			w.log.Warn("sender keys: timed out: counting what has not arrived as lost", "missing", n)
			break
		}
	}
	cancel()
	<-done
	return nil
}

// keySender selects the devices that hand out a sender key.
func (w *Worker) keySender(d *device) bool {
	dg := d.group.Load()
	return dg != nil && len(dg.keysTo) > 0
}

// keysMissing counts the distributions the devices here are still owed.
func (gw *groupWorker) keysMissing(w *Worker) int64 {
	var n int64
	for dg := range w.groupStates() {
		for _, ki := range dg.keys {
			_, recv := ki.flow.Counts()
			n += int64(len(ki.want) - recv)
		}
	}
	return n
}

// keyDelivery checks one 1:1 message of a group-envelopes run that
// reached d: a sender key distribution, or the copy of one its primary
// sent.
func (w *Worker) keyDelivery(d *device, m codec.Message) {
	if m.From == d.user && m.FromDevice == d.id {
		return // its own send, which carries nothing for it ([S-17-10])
	}
	var ki *keysIn
	if dg := d.group.Load(); dg != nil {
		ki = dg.keys[keySource{From: m.From, To: m.To}]
	}
	_, _, cmid, ok := parseBody(m.Body)
	if !ok || ki == nil || !ki.want[cmid] || m.Cipher != pb.Cipher_CIPHER_SIGNAL_PREKEY || !envelopeIsFor(m.Body, m.From, cmid, d.id) {
		w.stats.foreign.Add(1)
		return
	}
	switch ki.flow.Receive(cmid) {
	case deliveredOK:
		w.stats.keyDeliveries.Add(1)
	case deliveredTwice:
		w.stats.duplicated.Add(1)
		w.logAnomaly("sender key delivered twice", d, m.From, cmid)
	case deliveredOutOfOrder:
		w.stats.keyDeliveries.Add(1)
		w.stats.reordered.Add(1)
		w.logAnomaly("sender key out of order", d, m.From, cmid)
	}
}

// appendGroupEnvelopeSend appends the SEND of cmid from a sending primary
// of a group-envelopes run: its first cmids hand its sender key to one
// member each (keysTo), the rest are group messages of a sender key
// message's size. The same cmid gives the same bytes, so a resend is
// identical ([S-8-14]).
func (d *device) appendGroupEnvelopeSend(dst []byte, cmid uint64, p pending) []byte {
	cfg := &d.w.spec.Config
	dg := d.group.Load()
	if i := cmid - 1; i < uint64(len(dg.keysTo)) {
		t := dg.keysTo[i]
		body := appendBody(nil, p.intended, p.actual, cmid, senderKeyEnvelope)
		m := &pb.Send{To: t.user, Cmid: cmid, Type: pb.ContentType_CONTENT_TEXT}
		for _, id := range t.devices {
			m.Envelopes = append(m.Envelopes, d.envelope(body, cmid, id, pb.Cipher_CIPHER_SIGNAL_PREKEY))
		}
		for _, c := range d.companions {
			m.Own = append(m.Own, d.envelope(body, cmid, c.id, pb.Cipher_CIPHER_SIGNAL_PREKEY))
		}
		out, err := codec.AppendProto(dst, protocol.KindSend, m)
		if err != nil {
			return dst // cannot happen for this message
		}
		return out
	}
	body := appendBody(nil, p.intended, p.actual, cmid, cfg.MessageSize+senderKeyOverhead)
	fillCiphertext(body, d.user, cmid, 0)
	return codec.AppendSend(dst, codec.Send{Group: dg.sendTo, CMID: cmid, Body: body, Cipher: pb.Cipher_CIPHER_SENDER_KEY})
}

// envelope returns the envelope of cmid for device id: body (its header)
// with the rest of its bytes random, as different for each device and as
// incompressible as ciphertexts are, and the same for the same cmid.
func (d *device) envelope(body []byte, cmid uint64, id uint32, cipher pb.Cipher) *pb.Envelope {
	b := append([]byte(nil), body...)
	fillCiphertext(b, d.user, cmid, id)
	return &pb.Envelope{Device: id, Body: b, Cipher: cipher}
}

// envelopeIsFor reports whether body is the envelope that user's cmid
// carries for device (envelope's bytes): a device gets its own envelope,
// never another device's ([S-17-10]).
func envelopeIsFor(body []byte, user, cmid uint64, device uint32) bool {
	want := append([]byte(nil), body...)
	fillCiphertext(want, user, cmid, device)
	return bytes.Equal(want, body)
}

// fillCiphertext overwrites b after the body header with random bytes
// drawn from (user, cmid, device): the same arguments give the same bytes.
func fillCiphertext(b []byte, user, cmid uint64, device uint32) {
	r := rand.NewPCG(user, cmid<<32|uint64(device))
	for i := bodyHeader; i < len(b); i += 8 {
		var x [8]byte
		binary.LittleEndian.PutUint64(x[:], r.Uint64())
		copy(b[i:], x[:])
	}
}

// KeyDistribution is what handing out the sender keys of a
// group-envelopes run took: the 1:1 envelope sends, the devices that got
// one (each member device of each sender's group once, and a sender's
// other devices a copy of each of its sends), and the frame bytes of
// the step, up and down.
type KeyDistribution struct {
	Sends          int64   `json:"sends"`
	Deliveries     int64   `json:"deliveries"`
	FrameBytesUp   int64   `json:"frame_bytes_up"`
	FrameBytesDown int64   `json:"frame_bytes_down"`
	UpPerSend      float64 `json:"frame_bytes_up_per_send"`
	DownPerDevice  float64 `json:"frame_bytes_down_per_delivery"`
}

// assembleKeys reads the sender keys' step (step) from the workers'
// counters at its start and its end.
func (c *coordinator) assembleKeys(step int) {
	from, to := c.sum(step-1), c.sum(step)
	k := &KeyDistribution{
		Sends: to.KeySends - from.KeySends, Deliveries: to.KeyDeliveries - from.KeyDeliveries,
		FrameBytesUp: to.FrameBytesUp - from.FrameBytesUp, FrameBytesDown: to.FrameBytesDown - from.FrameBytesDown,
	}
	if k.Sends > 0 {
		k.UpPerSend = float64(k.FrameBytesUp) / float64(k.Sends)
	}
	if k.Deliveries > 0 {
		k.DownPerDevice = float64(k.FrameBytesDown) / float64(k.Deliveries)
	}
	c.res.KeyDistribution = k
}

// String is the distribution on one line of the text report.
func (k *KeyDistribution) String() string {
	return fmt.Sprintf("%d sends (%.0f B up each), %d deliveries (%.0f B down each)", k.Sends, k.UpPerSend, k.Deliveries, k.DownPerDevice)
}
