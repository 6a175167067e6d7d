package server

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// enrollLimit bounds the accepted connections being handed to an event
// loop at once; each holds two descriptors until its loop has it (gnet
// duplicates the socket). Config.FDReserve covers them.
const enrollLimit = 64

// acceptor accepts client connections on its own goroutine, applies the
// connection caps, and hands each admitted connection to an event loop
// through gnet's Engine.Register.
//
// Why not gnet's own listener: in gnet v2.10.0 (acceptor_unix.go) any
// accept error other than EAGAIN, EINTR, ECONNRESET and ECONNABORTED
// returns ErrAcceptSocket, on which the main reactor's poller stops and
// the engine shuts down with every connection. EMFILE or ENFILE, which any
// client can provoke by opening enough connections, would end the
// process's service; and a cap applied in OnOpen comes after the accept
// that fails. Here an accept error is counted, the pending connections
// are shed with a spare descriptor (as libuv does) and accepting resumes
// after a short pause; over a cap, a connection is reset before gnet sees
// it. The price is a goroutine hand-off, a dup and Go's own netpoller
// registration per accepted connection.
type acceptor struct {
	srv   *Server
	ln    *net.TCPListener
	spare *os.File // a descriptor kept free to accept and shed with on EMFILE; nil while spent

	enrolling chan enrollment // connections being handed to a loop, at most enrollLimit
	done      chan struct{}   // closed when the collector has seen every enrollment
	quit      chan struct{}   // closed with the listener

	mu     sync.Mutex
	open   int                     // guarded by mu: connections admitted and not yet closed
	perIP  map[netip.Addr]*ipCount // guarded by mu: the same, per limited address
	closed bool                    // guarded by mu: the listener was closed
}

// ipCount is one limited address's admitted connections.
type ipCount struct {
	addr netip.Addr
	n    int // guarded by acceptor.mu
}

// enrollment is one connection on its way to an event loop.
type enrollment struct {
	c      *conn
	result <-chan gnet.RegisteredResult
}

func newAcceptor(s *Server, ln *net.TCPListener) *acceptor {
	a := &acceptor{
		srv:       s,
		ln:        ln,
		enrolling: make(chan enrollment, enrollLimit),
		done:      make(chan struct{}),
		quit:      make(chan struct{}),
		perIP:     make(map[netip.Addr]*ipCount),
	}
	a.spare, _ = os.Open(os.DevNull)
	return a
}

// run accepts until the listener is closed, then waits for the
// connections on their way to a loop.
func (a *acceptor) run() {
	go a.collect()
	var pause time.Duration
	for {
		nc, err := a.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				break
			}
			// Never fatal: EMFILE, ENFILE, ENOBUFS and the like pass.
			a.srv.stats.AcceptErrors.Add(1)
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				a.shed()
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			a.srv.log.Warn("accept failed; pausing", "err", err, "pause", pause)
			if !a.sleep(pause) {
				break
			}
			continue
		}
		pause = 0
		a.admit(nc)
	}
	close(a.enrolling)
	<-a.done
	if a.spare != nil {
		_ = a.spare.Close()
	}
}

// sleep waits d, or less if the listener is closed meanwhile; it reports
// whether to go on.
func (a *acceptor) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a.quit:
		return false
	}
}

// close stops accepting: the kernel refuses new connections from now on.
func (a *acceptor) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closed {
		a.closed = true
		close(a.quit)
		_ = a.ln.Close()
	}
}

// shed frees the spare descriptor and accepts and resets the connections
// waiting in the listen queue, so their clients learn at once that the
// server is full instead of waiting for their own timeouts; then it takes
// the spare back (or tries again at the next failure).
func (a *acceptor) shed() {
	if a.spare != nil {
		_ = a.spare.Close()
		a.spare = nil
	}
	if rc, err := a.ln.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			for range 1024 {
				nfd, _, err := unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
				if err != nil {
					return
				}
				_ = unix.SetsockoptLinger(nfd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1})
				_ = unix.Close(nfd)
				a.srv.stats.RefusedFDLimit.Add(1)
			}
		})
	}
	a.spare, _ = os.Open(os.DevNull)
}

// admit applies the caps to a new connection and hands it to a loop, or
// resets it.
func (a *acceptor) admit(nc *net.TCPConn) {
	s := a.srv
	ip, refused := a.take(s.limitKey(nc.RemoteAddr()))
	if refused != nil || s.stopping.Load() {
		if refused != nil {
			refused.Add(1)
		} else {
			a.release(ip)
		}
		_ = nc.SetLinger(0) // reset: no FIN_WAIT or TIME_WAIT left behind
		_ = nc.Close()
		return
	}
	c := newConn(s, ip)
	ctx := gnet.NewContext(gnet.NewNetConnContext(context.Background(), nc), c)
	result, err := s.eng.Register(ctx)
	if err != nil {
		_ = nc.Close()
		a.release(ip)
		return
	}
	a.enrolling <- enrollment{c: c, result: result}
}

// take admits one connection from key (the zero Addr: not limited by
// address) if the caps allow, returning its address's count (nil when not
// limited); otherwise it returns the refusal counter to add to.
func (a *acceptor) take(key netip.Addr) (ip *ipCount, refused *atomic.Uint64) {
	st := &a.srv.stats
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.open >= a.srv.cfg.MaxConns {
		return nil, &st.RefusedMaxConns
	}
	if key.IsValid() {
		ip = a.perIP[key]
		switch {
		case ip == nil:
			ip = &ipCount{addr: key}
			a.perIP[key] = ip
		case ip.n >= a.srv.cfg.MaxConnsPerIP:
			return nil, &st.RefusedPerIP
		}
		ip.n++
	}
	a.open++
	return ip, nil
}

// collect waits for each hand-off to finish and gives back the admission
// of a connection whose OnOpen never ran (gnet could not register it), so
// that its OnClose will not.
func (a *acceptor) collect() {
	defer close(a.done)
	for e := range a.enrolling {
		r := <-e.result
		if r.Err != nil || !e.c.opened.Load() {
			if r.Err != nil {
				a.srv.log.Warn("handing a connection to an event loop failed", "err", r.Err)
			}
			a.release(e.c.ip)
		}
	}
}

// release gives back one admission, of a connection from ip (nil when
// its address is not limited).
func (a *acceptor) release(ip *ipCount) {
	a.mu.Lock()
	a.open--
	if ip != nil {
		if ip.n--; ip.n == 0 {
			delete(a.perIP, ip.addr)
		}
	}
	a.mu.Unlock()
}

// limitKey returns the address a client's connections and handshakes are
// counted under for the per-address caps: its IPv4 address, or its IPv6
// /64; the zero Addr (no per-address limit) for loopback clients unless
// LimitLoopback, and for every client in Plaintext mode, where all share
// the proxy's address.
func (s *Server) limitKey(a net.Addr) netip.Addr {
	if s.cfg.Plaintext {
		return netip.Addr{}
	}
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case interface{ AddrPort() netip.AddrPort }:
		ip = a.AddrPort().Addr()
	}
	ip = ip.Unmap()
	switch {
	case !ip.IsValid(), ip.IsLoopback() && !s.cfg.LimitLoopback:
		return netip.Addr{}
	case ip.Is6():
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}
