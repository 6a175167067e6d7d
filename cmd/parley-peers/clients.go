package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// pconn is one client connection to a peer, speaking MQTT 3.1.1 or core
// NATS over TLS 1.3. Its reader goroutine owns the read side.
type pconn struct {
	h      *harness
	idx    int
	peer   *pconn
	raw    net.Conn
	tc     *tls.Conn
	br     *bufio.Reader
	credit chan struct{}
	// inflight counts publishes not yet acknowledged (MQTT: PUBACK; NATS:
	// received by the peer).
	inflight atomic.Int32

	wmu    sync.Mutex
	pid    uint16 // guarded by wmu: MQTT packet id
	acks   []byte // owned by the reader: PUBACKs to write
	topic  []byte // own topic
	ptopic []byte // the peer's topic
}

// dial connects and subscribes conn to its own topic.
func (h *harness) dial(ctx context.Context, c *pconn) error {
	d := net.Dialer{Timeout: 15 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", h.srv.addr)
	if err != nil {
		return err
	}
	c.raw = raw
	cc := countingConn{Conn: raw, h: h}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} // a fresh self-signed certificate
	switch h.cfg.peer {
	case "mosquitto":
		c.topic, c.ptopic = fmt.Appendf(nil, "u/%d", c.idx), fmt.Appendf(nil, "u/%d", c.idx^1)
		c.tc = tls.Client(cc, tlsConf)
		if err := c.tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return err
		}
		c.br = bufio.NewReaderSize(c.tc, 4096)
		return c.mqttConnect()
	default:
		c.topic, c.ptopic = fmt.Appendf(nil, "u.%d", c.idx), fmt.Appendf(nil, "u.%d", c.idx^1)
		// NATS 2.9 sends INFO in plaintext, then the client starts TLS.
		br := bufio.NewReader(cc)
		_ = raw.SetReadDeadline(time.Now().Add(15 * time.Second))
		line, err := br.ReadString('\n')
		if err != nil || !bytes.HasPrefix([]byte(line), []byte("INFO ")) {
			raw.Close()
			return fmt.Errorf("nats: want INFO, got %q: %v", line, err)
		}
		_ = raw.SetReadDeadline(time.Time{})
		c.tc = tls.Client(cc, tlsConf)
		if err := c.tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return err
		}
		c.br = bufio.NewReaderSize(c.tc, 4096)
		return c.natsConnect()
	}
}

func (c *pconn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.h.frameUp.Add(int64(len(b)))
	_, err := c.tc.Write(b)
	return err
}

// MQTT 3.1.1 (OASIS standard), the packets this client needs.

func appendRemaining(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func appendString(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func (c *pconn) mqttConnect() error {
	id := fmt.Appendf(nil, "c%d", c.idx)
	vh := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0}, nil...) // clean session, no keepalive
	body := appendString(vh, id)
	pkt := appendRemaining([]byte{0x10}, len(body))
	pkt = append(pkt, body...)
	sub := binary.BigEndian.AppendUint16(nil, 1)
	sub = appendString(sub, c.topic)
	sub = append(sub, 1) // QoS 1
	pkt = append(appendRemaining(append(pkt, 0x82), len(sub)), sub...)
	if err := c.write(pkt); err != nil {
		return err
	}
	_ = c.raw.SetReadDeadline(time.Now().Add(15 * time.Second))
	defer c.raw.SetReadDeadline(time.Time{})
	for got := 0; got < 2; got++ {
		typ, body, err := c.mqttRead()
		if err != nil {
			return err
		}
		switch {
		case typ == 0x20 && len(body) == 2 && body[1] == 0: // CONNACK accepted
		case typ == 0x90: // SUBACK
		default:
			return fmt.Errorf("mqtt: unexpected packet %#x % x", typ, body)
		}
	}
	return nil
}

// mqttRead reads one packet; the body is valid until the next read.
func (c *pconn) mqttRead() (byte, []byte, error) {
	typ, err := c.br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for {
		b, err := c.br.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mul
		if b < 0x80 {
			break
		}
		mul *= 128
		if mul > 128*128*128 {
			return 0, nil, errors.New("mqtt: bad remaining length")
		}
	}
	body := make([]byte, n) // small: a 20-byte message
	if _, err := io.ReadFull(c.br, body); err != nil {
		return 0, nil, err
	}
	c.h.frameDown.Add(int64(n + 2))
	return typ, body, nil
}

func (c *pconn) mqttPublish(bodies [][]byte) error {
	var pkt []byte
	c.wmu.Lock()
	for _, body := range bodies {
		c.pid++
		if c.pid == 0 {
			c.pid = 1
		}
		pkt = appendRemaining(append(pkt, 0x32), 2+len(c.ptopic)+2+len(body))
		pkt = appendString(pkt, c.ptopic)
		pkt = binary.BigEndian.AppendUint16(pkt, c.pid)
		pkt = append(pkt, body...)
	}
	c.h.frameUp.Add(int64(len(pkt)))
	_, err := c.tc.Write(pkt)
	c.wmu.Unlock()
	return err
}

func (c *pconn) mqttReadLoop() error {
	for {
		typ, body, err := c.mqttRead()
		if err != nil {
			return err
		}
		switch typ >> 4 {
		case 3: // PUBLISH
			qos := (typ >> 1) & 3
			if len(body) < 2 {
				return errors.New("mqtt: short publish")
			}
			tl := int(binary.BigEndian.Uint16(body))
			p := body[2+tl:]
			if qos > 0 {
				c.acks = append(c.acks, 0x40, 2, p[0], p[1])
				p = p[2:]
			}
			c.h.deliver(c, p)
		case 4: // PUBACK
			c.inflight.Add(-1)
			select {
			case c.credit <- struct{}{}:
			default:
			}
		}
		if c.br.Buffered() == 0 && len(c.acks) > 0 {
			if err := c.write(c.acks); err != nil {
				return err
			}
			c.acks = c.acks[:0]
		}
	}
}

// Core NATS (the client protocol of nats-server).

func (c *pconn) natsConnect() error {
	msg := fmt.Appendf(nil, "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":true,\"echo\":false,\"protocol\":1,\"name\":\"c%d\"}\r\nSUB %s 1\r\nPING\r\n", c.idx, c.topic)
	if err := c.write(msg); err != nil {
		return err
	}
	_ = c.raw.SetReadDeadline(time.Now().Add(15 * time.Second))
	defer c.raw.SetReadDeadline(time.Time{})
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		c.h.frameDown.Add(int64(len(line)))
		switch {
		case bytes.HasPrefix(line, []byte("PONG")):
			return nil
		case bytes.HasPrefix(line, []byte("-ERR")):
			return fmt.Errorf("nats: %s", bytes.TrimSpace(line))
		}
	}
}

func (c *pconn) natsPublish(bodies [][]byte) error {
	var pkt []byte
	for _, body := range bodies {
		pkt = append(pkt, "PUB "...)
		pkt = append(pkt, c.ptopic...)
		pkt = append(pkt, ' ')
		pkt = strconv.AppendInt(pkt, int64(len(body)), 10)
		pkt = append(pkt, "\r\n"...)
		pkt = append(pkt, body...)
		pkt = append(pkt, "\r\n"...)
	}
	return c.write(pkt)
}

func (c *pconn) natsReadLoop() error {
	var payload []byte
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		c.h.frameDown.Add(int64(len(line)))
		switch {
		case bytes.HasPrefix(line, []byte("MSG ")):
			f := bytes.Fields(line)
			n, err := strconv.Atoi(string(f[len(f)-1]))
			if err != nil {
				return fmt.Errorf("nats: %q", line)
			}
			if cap(payload) < n+2 {
				payload = make([]byte, n+2)
			}
			payload = payload[:n+2]
			if _, err := io.ReadFull(c.br, payload); err != nil {
				return err
			}
			c.h.frameDown.Add(int64(n + 2))
			c.h.deliver(c, payload[:n])
			// No publish acknowledgement in core NATS: the sender's slot
			// frees when its peer (this connection) has the message.
			c.peer.inflight.Add(-1)
			select {
			case c.peer.credit <- struct{}{}:
			default:
			}
		case bytes.HasPrefix(line, []byte("PING")):
			if err := c.write([]byte("PONG\r\n")); err != nil {
				return err
			}
		case bytes.HasPrefix(line, []byte("-ERR")):
			return fmt.Errorf("nats: %s", bytes.TrimSpace(line))
		}
	}
}

// countingConn counts the bytes on the wire.
type countingConn struct {
	net.Conn
	h *harness
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.h.wireDown.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.h.wireUp.Add(int64(n))
	return n, err
}
