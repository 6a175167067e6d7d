package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// CodeSent is the server's answer to RequestCode.
type CodeSent struct {
	// CodeLength is the number of digits in the code.
	CodeLength int
	// ExpiresIn is how long the code stays valid.
	ExpiresIn time.Duration
	// RetryAfter is how long to wait before asking for another code.
	RetryAfter time.Duration
}

// RequestCode asks the server to send a verification code to phone (E.164)
// over one short connection. A refusal is a *ServerError (RATE_LIMITED,
// INVALID_ARGUMENT, …); its RetryAfter says when to ask again.
func RequestCode(ctx context.Context, cfg Config, phone string) (CodeSent, error) {
	if err := ValidatePhone(phone); err != nil {
		return CodeSent{}, err
	}
	var m pb.CodeSent
	err := exchange(ctx, cfg, protocol.KindRequestCode,
		&pb.RequestCode{Rid: 1, Phone: phone, Version: protocol.Version}, protocol.KindCodeSent, &m)
	if err != nil {
		return CodeSent{}, err
	}
	return CodeSent{
		CodeLength: int(m.CodeLength),
		ExpiresIn:  time.Duration(m.ExpiresInS) * time.Second,
		RetryAfter: time.Duration(m.RetryAfterS) * time.Second,
	}, nil
}

// Verify proves control of phone with the code it received and registers
// this installation as a new device of the number's account, over one short
// connection. The returned credentials are shown only once: save them
// (Store.SaveCredentials) before anything else. A wrong code is a
// *ServerError with CODE_INVALID (let the user try again), CODE_EXPIRED or
// TOO_MANY_ATTEMPTS (request a new code).
func Verify(ctx context.Context, cfg Config, phone, code, deviceName string) (Credentials, error) {
	if err := ValidatePhone(phone); err != nil {
		return Credentials{}, err
	}
	if code == "" {
		return Credentials{}, fmt.Errorf("%w: empty verification code", ErrInvalid)
	}
	if len(deviceName) > protocol.MaxDeviceName {
		return Credentials{}, fmt.Errorf("%w: device name of %d bytes exceeds %d", ErrInvalid, len(deviceName), protocol.MaxDeviceName)
	}
	var m pb.Registered
	err := exchange(ctx, cfg, protocol.KindVerify,
		&pb.Verify{Rid: 1, Phone: phone, Code: code, DeviceName: deviceName}, protocol.KindRegistered, &m)
	if err != nil {
		return Credentials{}, err
	}
	creds := Credentials{User: m.User, Device: m.Device, Secret: bytes.Clone(m.Credential)}
	if err := creds.validate(); err != nil {
		return Credentials{}, fmt.Errorf("%w: registered: %w", ErrProtocol, err)
	}
	return creds, nil
}

// exchange sends one request with rid 1 on a new connection and decodes
// the answer of kind want into out. The whole exchange is bounded by
// cfg.DialTimeout and ctx.
func exchange(ctx context.Context, cfg Config, kind protocol.Kind, req proto.Message, want protocol.Kind, out proto.Message) error {
	st, err := cfg.resolve()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, st.DialTimeout)
	defer cancel()
	conn, raw, err := st.dial(ctx)
	if err != nil {
		return err
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}

	frame, err := codec.AppendProto(nil, kind, req)
	if err != nil {
		return err
	}
	if _, err := conn.Write(frame); err != nil {
		return fmt.Errorf("client: write %v: %w", kind, ctxErr(ctx, err))
	}
	r := codec.NewReader(conn, protocol.MaxFrameBody, nil)
	for {
		f, err := r.ReadFrame()
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
			return nil
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
		// Anything else (a Pong) is not the answer; keep reading.
	}
}

// ctxErr prefers the context's error, which explains a closed connection
// or a deadline the socket reached a moment before the context did.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}
