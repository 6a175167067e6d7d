package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Linked devices (spec.md section 9). An account has one primary device
// (the one Verify registered) and up to protocol.MaxCompanions companions.
// A companion is linked in four steps ([S-9-12]): the new device calls
// RequestLink and shows PendingLink.Code; the user types or scans it on
// the primary, which calls ApproveLink; PendingLink.Wait returns the
// companion's Credentials; the companion saves them and logs in with New
// and Run, like a device after Verify.

// DeviceInfo describes one active device of the account (DEVICE_LIST).
type DeviceInfo struct {
	// ID is the device id, unique within the account and never reused.
	ID uint32
	// Name is the device_name it registered or linked with.
	Name string
	// Created is when it was registered.
	Created time.Time
	// Primary is true for the device Verify registered.
	Primary bool
	// Online is true while a connection of the device is logged in.
	Online bool
}

// Devices returns the account's active devices, by id ([S-9-15]). Any
// device may ask.
func (c *Client) Devices(ctx context.Context) ([]DeviceInfo, error) {
	m, err := doAs[*pb.DeviceList](ctx, c, &request{kind: protocol.KindDevices, body: func(rid uint32) proto.Message {
		return &pb.Devices{Rid: rid}
	}})
	if err != nil {
		return nil, err
	}
	out := make([]DeviceInfo, len(m.Devices))
	for i, d := range m.Devices {
		out[i] = DeviceInfo{ID: d.Id, Name: d.Name, Created: time.UnixMilli(int64(d.CreatedMs)), Primary: d.Primary, Online: d.Online}
	}
	return out, nil
}

// RevokeDevice removes device id from the account ([S-9-14]): the primary
// may revoke any companion, a companion only itself (NOT_PRIMARY); the
// primary cannot be revoked (INVALID_ARGUMENT), and an unknown or revoked
// id is NOT_FOUND. The revoked device's connection is closed with
// DEVICE_REVOKED: revoking this client's own device ends it with a Fatal
// event right after the call succeeds. Not repeated after a lost
// connection (ErrNoAnswer).
func (c *Client) RevokeDevice(ctx context.Context, id uint32) error {
	if id == 0 {
		return fmt.Errorf("%w: device 0", ErrInvalid)
	}
	_, err := doAs[*pb.Ok](ctx, c, &request{kind: protocol.KindRevokeDevice, once: true, body: func(rid uint32) proto.Message {
		return &pb.RevokeDevice{Rid: rid, Device: id}
	}})
	return err
}

// ApproveLink links the companion that shows code to this account; only
// the primary device may (NOT_PRIMARY). code is taken as a user typed it:
// ParseLinkCode cleans it up first. It returns once the companion is
// registered. LINK_EXPIRED means the code is wrong, used or expired (the
// companion asks for a new one); TOO_MANY_DEVICES that the account has
// protocol.MaxCompanions companions already. A code is used up by its
// first approval, so ApproveLink is not repeated after a lost connection
// (ErrNoAnswer).
func (c *Client) ApproveLink(ctx context.Context, code string) error {
	code, err := ParseLinkCode(code)
	if err != nil {
		return err
	}
	_, err = doAs[*pb.Ok](ctx, c, &request{kind: protocol.KindLinkApprove, once: true, body: func(rid uint32) proto.Message {
		return &pb.LinkApprove{Rid: rid, Code: code}
	}})
	return err
}

// linkAlphabet is the characters of link codes: digits and capitals
// without I, L, O and U (spec section 7.35).
const linkAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// ParseLinkCode turns a link code as a user typed it into the form the
// server compares exactly ([S-9-12]): upper case, without spaces and
// dashes. It fails (ErrInvalid) unless that leaves protocol.LinkCodeLen
// characters of the code alphabet.
func ParseLinkCode(s string) (string, error) {
	code := strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' || r == '\t' {
			return -1
		}
		return r
	}, strings.ToUpper(s))
	if len(code) != protocol.LinkCodeLen || strings.Trim(code, linkAlphabet) != "" {
		return "", fmt.Errorf("%w: %q is not a link code (%d letters and digits)", ErrInvalid, s, protocol.LinkCodeLen)
	}
	return code, nil
}

// PendingLink is a companion's link request on its own connection,
// waiting for the primary's approval. Its methods may be called from
// different goroutines, Wait once.
type PendingLink struct {
	// Code is the link code to show the user, as text or as a QR code
	// holding exactly these characters.
	Code string
	// ExpiresIn is how long the code works from when RequestLink returned.
	ExpiresIn time.Duration

	conn, raw net.Conn
	r         *codec.Reader
	rid       uint32
	waited    sync.Once
	closeOnce sync.Once
}

// RequestLink starts linking this installation as a companion device of
// an account ([S-9-12]): it opens a connection, sends LINK_REQUEST with
// deviceName (at most protocol.MaxDeviceName bytes, shown in the device
// list) and returns the code the server gave. The connection stays open;
// call Wait for the approval, or Close to give up.
func RequestLink(ctx context.Context, cfg Config, deviceName string) (*PendingLink, error) {
	if len(deviceName) > protocol.MaxDeviceName || !utf8.ValidString(deviceName) {
		return nil, fmt.Errorf("%w: device name must be at most %d bytes of UTF-8", ErrInvalid, protocol.MaxDeviceName)
	}
	st, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, st.DialTimeout)
	defer cancel()
	conn, raw, err := st.dial(dctx)
	if err != nil {
		return nil, err
	}
	l := &PendingLink{conn: conn, raw: raw, r: codec.NewReader(conn, protocol.MaxFrameBody, nil), rid: 1}
	stop := context.AfterFunc(dctx, func() { _ = raw.Close() })
	defer stop()
	if dl, ok := dctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	frame, err := codec.AppendProto(nil, protocol.KindLinkRequest, &pb.LinkRequest{Rid: l.rid, Version: protocol.Version, DeviceName: deviceName})
	if err == nil {
		_, err = conn.Write(frame)
	}
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("client: write LINK_REQUEST: %w", ctxErr(dctx, err))
	}
	var m pb.LinkCode
	if err := l.read(dctx, protocol.KindLinkCode, &m); err != nil {
		l.Close()
		return nil, err
	}
	if !stop() {
		l.Close()
		return nil, ctxErr(dctx, context.Canceled)
	}
	_ = conn.SetDeadline(time.Time{})
	l.Code, l.ExpiresIn = m.Code, time.Duration(m.ExpiresInS)*time.Second
	return l, nil
}

// Wait waits for the approval and returns the new device's credentials:
// save them (Store.SaveCredentials) before anything else, as after
// Verify; the server shows them once. A companion starts with the inbox
// entries stored after it was linked ([S-9-13]). Wait ends when ctx does,
// or when the server closes the connection (the code expires after
// ExpiresIn; the connection after 3 minutes, [S-6-9]); then a new
// RequestLink makes a new code. The connection is closed when Wait
// returns. Wait may be called once.
func (l *PendingLink) Wait(ctx context.Context) (Credentials, error) {
	err := errors.New("client: PendingLink.Wait called twice")
	var creds Credentials
	l.waited.Do(func() {
		defer l.Close()
		stop := context.AfterFunc(ctx, func() { _ = l.raw.Close() })
		defer stop()
		var m pb.Linked
		if err = l.read(ctx, protocol.KindLinked, &m); err != nil {
			return
		}
		creds = Credentials{User: m.User, Device: m.Device, Secret: bytes.Clone(m.Credential)}
		if verr := creds.validate(); verr != nil {
			err = fmt.Errorf("%w: linked: %w", ErrProtocol, verr)
		}
	})
	if err != nil {
		return Credentials{}, err
	}
	return creds, nil
}

// Close gives up the link request and closes its connection. It is safe
// to call more than once.
func (l *PendingLink) Close() error {
	l.closeOnce.Do(func() { _ = l.raw.Close() })
	return nil
}

// read reads frames until one of kind want answers the link request, and
// decodes it into out. ERROR and GOAWAY become a *ServerError.
func (l *PendingLink) read(ctx context.Context, want protocol.Kind, out interface {
	proto.Message
	GetRid() uint32
}) error {
	for {
		f, err := l.r.ReadFrame()
		if err != nil {
			if errors.Is(err, codec.ErrMalformed) || errors.Is(err, codec.ErrTooLarge) {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("client: waiting for %v: %w", want, ctxErr(ctx, err))
		}
		switch f.Kind {
		case want:
			if err := codec.ParseProto(f.Body, out); err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			if out.GetRid() == l.rid {
				return nil
			}
		case protocol.KindError:
			var m pb.Error
			if err := codec.ParseProto(f.Body, &m); err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			return &ServerError{Code: m.Code, Message: m.Message, RetryAfter: time.Duration(m.RetryAfterMs) * time.Millisecond}
		case protocol.KindGoAway:
			var m pb.GoAway
			if err := codec.ParseProto(f.Body, &m); err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			return &ServerError{Code: m.Code, GoAway: true, RetryAfter: time.Duration(m.ReconnectAfterMs) * time.Millisecond}
		}
	}
}
