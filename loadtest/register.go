package loadtest

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Registration runs on a few connections, each pipelining REQUEST_CODE and
// VERIFY for a chunk of accounts at once: the two go to the phone's shard
// in order, so VERIFY finds the code ([S-6-6], [S-9-1]).
const (
	registerConns = 8
	registerChunk = 32 // accounts in flight per connection: 64 requests, under 128
)

// phone returns the phone number of account index i in this run.
func phone(prefix, runID string, i int) string {
	return fmt.Sprintf("%s%s%0*d", prefix, runID, indexDigits, i)
}

// register creates an account for every device of the worker with the
// server's test numbers and code.
func (w *Worker) register(ctx context.Context) error {
	n := len(w.devices)
	conns := min(registerConns, (n+registerChunk-1)/registerChunk)
	errs := make(chan error, conns)
	for c := range conns {
		go func() {
			var mine []*device
			for i := c; i < n; i += conns {
				mine = append(mine, w.devices[i])
			}
			errs <- w.registerOn(ctx, mine)
		}()
	}
	var first error
	for range conns {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// registerOn registers devs over one connection.
func (w *Worker) registerOn(ctx context.Context, devs []*device) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	nc, err := w.dialer.DialContext(ctx, "tcp", w.spec.addrOf(devs[0].index)) // any node registers
	if err != nil {
		return fmt.Errorf("register: dial: %w%s", err, portHint(err))
	}
	tc := tls.Client(nc, w.tlsConfig)
	defer tc.Close()
	stop := context.AfterFunc(ctx, func() { _ = tc.SetDeadline(time.Now()) })
	defer stop()
	r := codec.NewReader(tc, protocol.MaxFrameBody, nil)
	cfg := &w.spec.Config
	var buf []byte
	for lo := 0; lo < len(devs); lo += registerChunk {
		chunk := devs[lo:min(len(devs), lo+registerChunk)]
		buf = buf[:0]
		for k, d := range chunk {
			p := phone(cfg.PhonePrefix, w.spec.RunID, d.index)
			buf, _ = codec.AppendProto(buf, protocol.KindRequestCode, &pb.RequestCode{Rid: uint32(2*k + 1), Phone: p, Version: protocol.Version})
			buf, _ = codec.AppendProto(buf, protocol.KindVerify, &pb.Verify{Rid: uint32(2*k + 2), Phone: p, Code: cfg.TestCode, DeviceName: "parley-load"})
		}
		if _, err := tc.Write(buf); err != nil {
			return fmt.Errorf("register: write: %w", err)
		}
		for left := len(chunk); left > 0; {
			f, err := r.ReadFrame()
			if err != nil {
				return fmt.Errorf("register: read: %w", err)
			}
			switch f.Kind {
			case protocol.KindCodeSent:
			case protocol.KindRegistered:
				var reg pb.Registered
				if err := codec.ParseProto(f.Body, &reg); err != nil {
					return err
				}
				k := int(reg.Rid)/2 - 1
				if reg.Rid%2 != 0 || k < 0 || k >= len(chunk) {
					return fmt.Errorf("register: unexpected rid %d", reg.Rid)
				}
				d := chunk[k]
				d.user, d.id, d.cred = reg.User, reg.Device, reg.Credential
				left--
			case protocol.KindError:
				var e pb.Error
				_ = codec.ParseProto(f.Body, &e)
				hint := ""
				if e.Code == protocol.CodeCodeInvalid || e.Code == protocol.CodeCodeExpired || e.Code == protocol.CodeRateLimited {
					hint = fmt.Sprintf(" (is the server started with --test-phone-prefix %s --test-code %s?)", cfg.PhonePrefix, cfg.TestCode)
				}
				return fmt.Errorf("register: %v for request %d%s", e.Code, e.Rid, hint)
			}
		}
	}
	return nil
}

// pair makes devices 2i and 2i+1 each other's peer.
func (w *Worker) pair() {
	for i := 0; i+1 < len(w.devices); i += 2 {
		a, b := w.devices[i], w.devices[i+1]
		a.peer, b.peer = b, a
		a.out, b.out = &direction{}, &direction{}
		a.in, b.in = b.out, a.out
	}
}
