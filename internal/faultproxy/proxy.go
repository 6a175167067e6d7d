package faultproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Direction names the directions of a proxied connection that a partition
// stalls.
type Direction uint8

// Directions. Forward is from the connection's dialer towards the target,
// Backward from the target towards the dialer.
const (
	Forward  Direction = 1 << iota
	Backward           // from the target to the dialer
	Both     = Forward | Backward
)

// String returns "forward", "backward", "both" or "none".
func (d Direction) String() string {
	switch d {
	case Forward:
		return "forward"
	case Backward:
		return "backward"
	case Both:
		return "both"
	}
	return "none"
}

// ParseDirection parses the names String returns.
func ParseDirection(s string) (Direction, error) {
	for _, d := range []Direction{0, Forward, Backward, Both} {
		if d.String() == s {
			return d, nil
		}
	}
	return 0, fmt.Errorf("faultproxy: direction %q, want forward, backward or both", s)
}

// chunkSize is the most a direction reads (and holds) at once.
const chunkSize = 32 << 10

// Proxy forwards connections from its listener to a target, with the
// faults its methods turn on. The zero value is not usable; call Listen.
type Proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu      sync.Mutex
	cond    *sync.Cond                  // signalled when a fault changes or a connection ends
	stalled Direction                   // guarded by mu
	delay   time.Duration               // guarded by mu
	refuse  bool                        // guarded by mu
	conns   map[*proxied]bool           // guarded by mu
	closed  bool                        // guarded by mu
	counts  struct{ conns, resets int } // guarded by mu
}

// proxied is one proxied connection: the dialer's side a, the target's b.
type proxied struct {
	a, b net.Conn
	dead chan struct{} // closed when either side fails or the proxy resets it
	once sync.Once
}

// end aborts both sides: SetLinger(0) makes close send a reset, so both
// ends see the connection fail at once and lose what was in flight.
func (c *proxied) end() {
	c.once.Do(func() {
		close(c.dead)
		for _, x := range []net.Conn{c.a, c.b} {
			if t, ok := x.(*net.TCPConn); ok {
				_ = t.SetLinger(0)
			}
			_ = x.Close()
		}
	})
}

// Listen starts a Proxy on addr (e.g. "127.0.0.1:0") forwarding to target.
func Listen(addr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: %w", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[*proxied]bool{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Partition stalls the directions d of every connection, open or new, until
// Heal: bytes in a stalled direction are held, not forwarded nor dropped.
// Partition(0) is Heal.
func (p *Proxy) Partition(d Direction) {
	p.mu.Lock()
	p.stalled = d
	p.mu.Unlock()
	p.cond.Broadcast()
}

// Heal ends a partition: held bytes flow again.
func (p *Proxy) Heal() { p.Partition(0) }

// SetDelay holds every chunk of bytes d before forwarding it (0: none).
// Order is kept.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = max(d, 0)
	p.mu.Unlock()
}

// Reset aborts every open connection (a TCP reset to both ends) and
// returns how many there were.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	cs := make([]*proxied, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	p.counts.resets += len(cs)
	p.mu.Unlock()
	for _, c := range cs {
		c.end()
	}
	p.cond.Broadcast()
	return len(cs)
}

// Refuse makes the proxy reset new connections at once (on) or forward
// them again (off); open connections are not affected.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Status is a snapshot of a Proxy's faults.
type Status struct {
	Stalled string        `json:"stalled"` // a Direction's String
	Delay   time.Duration `json:"delay_ns"`
	Refuse  bool          `json:"refuse"`
	Open    int           `json:"open"`   // connections open now
	Conns   int           `json:"conns"`  // connections accepted in all
	Resets  int           `json:"resets"` // connections aborted by Reset
}

// Status returns the proxy's faults and counts.
func (p *Proxy) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Status{
		Stalled: p.stalled.String(), Delay: p.delay, Refuse: p.refuse,
		Open: len(p.conns), Conns: p.counts.conns, Resets: p.counts.resets,
	}
}

// Close stops the proxy: the listener closes, every connection is
// aborted, and Close waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Reset()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		a, err := p.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		p.mu.Lock()
		refuse, closed := p.refuse, p.closed
		p.counts.conns++
		p.mu.Unlock()
		if refuse || closed {
			(&proxied{a: a, b: nopConn{a}, dead: make(chan struct{})}).end()
			continue
		}
		p.wg.Add(1)
		go p.serve(a)
	}
}

// serve connects a to the target and forwards both ways until either side
// fails or the proxy resets the connection.
func (p *Proxy) serve(a net.Conn) {
	defer p.wg.Done()
	b, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		(&proxied{a: a, b: nopConn{a}, dead: make(chan struct{})}).end()
		return
	}
	c := &proxied{a: a, b: b, dead: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.end()
		return
	}
	p.conns[c] = true
	p.mu.Unlock()
	p.wg.Add(2)
	go p.pipe(c, a, b, Forward)
	go p.pipe(c, b, a, Backward)
	<-c.dead
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	p.cond.Broadcast()
}

// pipe forwards src to dst in direction d until the connection ends.
func (p *Proxy) pipe(c *proxied, src, dst net.Conn, d Direction) {
	defer p.wg.Done()
	defer c.end()
	buf := make([]byte, chunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			at := time.Now()
			delay, ok := p.pass(c, d)
			if !ok {
				return
			}
			if delay > 0 && !c.wait(time.Until(at.Add(delay))) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			// A clean end of one direction ends both: the link protocol
			// never half-closes, and a reset is what the proxy models.
			return
		}
	}
}

// pass waits while direction d is stalled; it returns the delay to apply,
// or false if the connection ended meanwhile.
func (p *Proxy) pass(c *proxied, d Direction) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.stalled&d != 0 {
		select {
		case <-c.dead:
			return 0, false
		default:
		}
		p.cond.Wait()
	}
	select {
	case <-c.dead:
		return 0, false
	default:
	}
	return p.delay, true
}

// wait waits d unless the connection ends first.
func (c *proxied) wait(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.dead:
		return false
	}
}

// nopConn stands for the target side of a connection that never reached
// it: closing it does nothing more.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }
