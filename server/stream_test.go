package server_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// entry is one inbox entry as a device saw it.
type entry struct {
	seq   uint64
	kind  protocol.Kind
	id    uint64 // message or event id
	group uint64
	gseq  uint64
	from  uint64
	body  string
}

// stream is a device that reads its inbox stream on a goroutine,
// acknowledging every entry, and can disconnect and resume at will — the
// client behaviour the ordering tests need, with no SDK in between.
type stream struct {
	t      testing.TB
	n      *testNode
	user   wiretest.User
	mu     sync.Mutex
	got    []entry // every entry received, in arrival order
	cursor uint64  // highest seq received
	sent   map[uint64]uint64
	sentCh chan struct{}
	conn   net.Conn
	done   chan struct{}
	err    error
}

func newStream(t testing.TB, n *testNode, u wiretest.User) *stream {
	return &stream{t: t, n: n, user: u, sent: map[uint64]uint64{}, sentCh: make(chan struct{}, 1)}
}

// connect logs in, resuming after the cursor, and starts reading.
func (s *stream) connect() {
	s.t.Helper()
	conn, err := tls.Dial("tcp", s.n.Addr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	cursor := s.cursor
	s.conn, s.done = conn, make(chan struct{})
	s.mu.Unlock()
	b, _ := codec.AppendProto(nil, protocol.KindLogin, &pb.Login{Version: protocol.Version, User: s.user.ID, Device: s.user.Device, Credential: s.user.Cred, Cursor: cursor})
	if _, err := conn.Write(b); err != nil {
		s.t.Fatal(err)
	}
	go s.read(conn, s.done)
}

// disconnect drops the connection without a goodbye.
func (s *stream) disconnect() {
	s.mu.Lock()
	conn, done := s.conn, s.done
	s.conn = nil
	s.mu.Unlock()
	if conn != nil {
		conn.Close()
		<-done
	}
}

func (s *stream) read(conn net.Conn, done chan struct{}) {
	defer close(done)
	dec, _ := codec.NewDecompressor(protocol.MaxFrameBody)
	defer dec.Close()
	r := codec.NewReader(conn, protocol.MaxFrameBody, dec)
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return
		}
		var last uint64
		if f.Kind == protocol.KindBatch {
			for rest := f.Body; len(rest) > 0; {
				inner, next, err := codec.NextFrame(rest, protocol.MaxFrameBody)
				if err != nil {
					s.fail(err)
					return
				}
				rest = next
				last = max(last, s.handle(inner))
			}
		} else {
			last = s.handle(f)
		}
		if last > 0 {
			_, _ = conn.Write(codec.AppendAck(nil, last))
		}
	}
}

// handle records one frame and returns its seq if it is an entry.
func (s *stream) handle(f codec.Frame) uint64 {
	e := entry{kind: f.Kind}
	switch f.Kind {
	case protocol.KindMessage:
		m, err := codec.ParseMessage(f.Body)
		if err != nil {
			s.fail(err)
			return 0
		}
		e.seq, e.id, e.group, e.gseq, e.from, e.body = m.Seq, m.ID, m.Group, m.GSeq, m.From, string(m.Body)
	case protocol.KindReceipt:
		r, _ := codec.ParseReceipt(f.Body)
		e.seq = r.Seq
	case protocol.KindGroupEvent:
		var ev pb.GroupEvent
		_ = codec.ParseProto(f.Body, &ev)
		e.seq, e.id, e.group, e.gseq, e.from = ev.Seq, ev.Id, ev.Group, ev.Gseq, ev.Actor
		e.body = fmt.Sprintf("%v%v", ev.Op, ev.Members)
	case protocol.KindReceipts:
		var rs pb.Receipts
		_ = codec.ParseProto(f.Body, &rs)
		e.seq = rs.Seq
	case protocol.KindSent:
		var sent pb.Sent
		_ = codec.ParseProto(f.Body, &sent)
		s.mu.Lock()
		s.sent[sent.Cmid] = sent.Id
		s.mu.Unlock()
		select {
		case s.sentCh <- struct{}{}:
		default:
		}
		return 0
	case protocol.KindError:
		var pe pb.Error
		_ = codec.ParseProto(f.Body, &pe)
		if pe.Code != protocol.CodeOverloaded {
			s.fail(fmt.Errorf("error frame %v", pe.Code))
		}
		return 0
	default:
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.seq <= s.cursor {
		s.err = fmt.Errorf("device %d/%d: seq %d after %d (duplicate or reorder)", s.user.ID, s.user.Device, e.seq, s.cursor)
		return 0
	}
	s.cursor = e.seq
	s.got = append(s.got, e)
	return e.seq
}

func (s *stream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// write sends raw frames on the current connection; false if there is none.
func (s *stream) write(b []byte) bool {
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if conn == nil {
		return false
	}
	_, err := conn.Write(b)
	return err == nil
}

// waitSent waits until cmid has its Sent. It may run on any goroutine: a
// timeout is reported with Errorf and returns false.
func (s *stream) waitSent(cmid uint64) bool {
	deadline := time.After(20 * time.Second)
	for {
		s.mu.Lock()
		_, ok := s.sent[cmid]
		s.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-s.sentCh:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			s.t.Errorf("device %d/%d: no Sent for cmid %d", s.user.ID, s.user.Device, cmid)
			return false
		}
	}
}

// waitFor waits until cond holds over the recorded entries.
func (s *stream) waitFor(what string, cond func(got []entry) bool) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		ok, err := cond(s.got), s.err
		s.mu.Unlock()
		if err != nil {
			s.t.Fatal(err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			s.mu.Lock()
			n := len(s.got)
			s.mu.Unlock()
			s.t.Fatalf("device %d/%d: timed out waiting for %s (%d entries)", s.user.ID, s.user.Device, what, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// entries returns a copy of what the device got.
func (s *stream) entries() []entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]entry(nil), s.got...)
}
