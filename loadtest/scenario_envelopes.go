package loadtest

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// envelopesScenario is the pairs scenario with end-to-end encryption's
// delivery model (spec.md section 17.2): each user has Config.Devices
// devices (a primary and linked companions), every device publishes keys,
// and each primary sends its peer messages as per-device envelopes, one
// for each device of the peer and one for each of its own companions. The
// envelopes are opaque bytes of the size libsignal gives a Signal message
// (envelopeOverhead more than the text), not real ciphertexts: the server
// never reads them, so its work is the same, while real sessions would
// spend the shared cores on the load generator's encryption (measured in
// docs/benchmarks.md with client.BenchmarkMessages). Every receiving
// device checks loss, duplication and order of its own stream from each
// sender: the peer's messages, and its primary's copies on a companion.
var envelopesScenario = Scenario{
	Name:    envelopesName,
	Summary: "pairs whose users have --devices devices, sending per-device envelopes of Signal's sizes; bytes per message and msg/s",
	Steps: func(cfg *Config) []Step {
		return []Step{
			stepRegister(true),
			{
				Name:   "link",
				Worker: func(ctx context.Context, w *Worker) error { return w.linkCompanions(ctx) },
				Timed:  true,
			},
			stepConnect("connect", func(d *device) bool { return d.session() == nil }, 0),
			{
				Name:   "keys",
				Worker: func(ctx context.Context, w *Worker) error { return w.publishKeys(ctx) },
			},
			{
				Name: "traffic",
				Worker: func(ctx context.Context, w *Worker) error {
					cfg := &w.spec.Config
					p := planTraffic(cfg, cfg.Connections, cfg.Duration)
					p.match = func(d *device) bool { return d.primary == nil }
					w.traffic(ctx, p, cfg.Warmup)
					return nil
				},
				Timed:       true,
				MeasureFrom: true,
			},
			stepDrain(),
			stepClose(),
		}
	},
}

// envelopesName names the envelopes scenario (for the code its steps
// reach).
const envelopesName = "envelopes"

// envelopeOverhead is what libsignal adds to a short text in a Signal
// message (version, ratchet key, counters, padding to the AES block, MAC,
// protobuf framing): 86 bytes for a 20-byte text, docs/benchmarks.md.
const envelopeOverhead = 66

// linkCompanions links Devices-1 companions to every primary of this
// worker, each primary logged in to approve them, adds them to the
// worker's devices after the primaries, and wires the ledgers of pairs: a
// primary's sends reach its peer's devices and its own companions.
func (w *Worker) linkCompanions(ctx context.Context) error {
	cfg := &w.spec.Config
	primaries := slices.Clone(w.primaries())
	if cfg.Devices > 1 {
		ccfg := client.Config{
			Addr: w.spec.Addr, Fingerprint: w.spec.Fingerprint, Dial: w.dialer.DialContext,
			DialTimeout: 10 * time.Second, Decompressor: w.dec, Logger: w.log,
		}
		err := forEachParallel(ctx, primaries, 16, func(ctx context.Context, p *device) error {
			if err := p.connectRetry(ctx); err != nil {
				return fmt.Errorf("link: %w", err)
			}
			s := p.session()
			if s == nil {
				return fmt.Errorf("link: device %d dropped", p.index)
			}
			ccfg := ccfg // the companions use their primary's node
			home := w.spec.nodeOf(p.index)
			ccfg.Addr, ccfg.Fingerprint = home.Addr, home.Fingerprint
			for k := 1; k < cfg.Devices; k++ {
				pl, err := client.RequestLink(ctx, ccfg, fmt.Sprintf("parley-load companion %d", k))
				if err != nil {
					return fmt.Errorf("link: device %d: request: %w", p.index, err)
				}
				err = requestOK(s.request(ctx, protocol.KindLinkApprove, func(rid uint32) proto.Message {
					return &pb.LinkApprove{Rid: rid, Code: pl.Code}
				}))
				if err != nil {
					pl.Close()
					return fmt.Errorf("link: device %d: approve: %w", p.index, err)
				}
				creds, err := pl.Wait(ctx)
				if err != nil {
					return fmt.Errorf("link: device %d: linked: %w", p.index, err)
				}
				c := newDevice(w, p.index)
				c.user, c.id, c.cred, c.primary = creds.User, creds.Device, creds.Secret, p
				p.companions = append(p.companions, c)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for _, p := range primaries {
		for _, c := range p.companions {
			w.devices = append(w.devices, c)
			if q := p.peer; q != nil {
				c.peer, c.in = q, &direction{}
				q.fanout = append(q.fanout, c.in)
				c.copies = &direction{}
				p.fanout = append(p.fanout, c.copies)
			}
		}
	}
	return nil
}

// primaries returns the worker's accounts' first devices, in account
// order; the companions follow them in w.devices.
func (w *Worker) primaries() []*device {
	return w.devices[:w.spec.Hi-w.spec.Lo]
}

// shareAccounts is a Step.Share: for each account, its user id and then
// its device ids, the primary's first (1 + Devices values).
func shareAccounts(w *Worker) []uint64 {
	var out []uint64
	for _, p := range w.primaries() {
		out = append(out, p.user, uint64(p.id))
		for _, c := range p.companions {
			out = append(out, uint64(c.id))
		}
	}
	return out
}

// publishKeys publishes well-formed public keys for every device (the
// server checks only their shapes, [S-17-1]), so that the envelopes name
// exactly the devices with keys ([S-17-9]).
func (w *Worker) publishKeys(ctx context.Context) error {
	return w.forEach(ctx, 64, nil, func(ctx context.Context, d *device) error {
		s := d.session()
		if s == nil {
			return fmt.Errorf("keys: device %d/%d is not connected", d.user, d.id)
		}
		key := func(n byte) []byte {
			k := make([]byte, protocol.KeyLen)
			k[0], k[1] = 0x05, n
			return k
		}
		err := requestOK(s.request(ctx, protocol.KindKeysPublish, func(rid uint32) proto.Message {
			return &pb.KeysPublish{
				Rid: rid, IdentityKey: key(1), RegistrationId: 1 + d.id%16000,
				SignedPrekey: &pb.SignedPreKey{Id: 1, Key: key(2), Signature: make([]byte, protocol.SignatureLen)},
			}
		}))
		if err != nil {
			return fmt.Errorf("keys: device %d/%d: %w", d.user, d.id, err)
		}
		return nil
	})
}

// requestOK turns a request's answer into an error unless it is OK.
func requestOK(r reply, err error) error {
	switch {
	case err != nil:
		return err
	case r.kind == protocol.KindError:
		var e pb.Error
		_ = codec.ParseProto(r.body, &e)
		return fmt.Errorf("%v %s", e.Code, e.Message)
	case r.kind != protocol.KindOK:
		return fmt.Errorf("answered with %v", r.kind)
	}
	return nil
}

// appendEnvelopeSend appends the SEND of message cmid from primary d as
// envelopes, one for every device of its peer and every companion of d
// (d.envelope: random bytes after body's header, the same for the same
// cmid, so that a resend is identical, [S-8-14]).
func (d *device) appendEnvelopeSend(dst []byte, cmid uint64, body []byte) []byte {
	q := d.peer
	m := &pb.Send{To: q.user, Cmid: cmid, Type: pb.ContentType_CONTENT_TEXT, Cipher: pb.Cipher_CIPHER_SIGNAL}
	env := func(id uint32) *pb.Envelope { return d.envelope(body, cmid, id, pb.Cipher_CIPHER_SIGNAL) }
	m.Envelopes = append(m.Envelopes, env(q.id))
	for _, c := range q.companions {
		m.Envelopes = append(m.Envelopes, env(c.id))
	}
	for _, c := range d.companions {
		m.Own = append(m.Own, env(c.id))
	}
	out, err := codec.AppendProto(dst, protocol.KindSend, m)
	if err != nil {
		return dst // cannot happen for this message
	}
	return out
}
