package client

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// The key directory (spec.md section 17.1): the raw requests. An
// application that brings its own end-to-end encryption may use them
// directly; the SDK's own encryption (E2E) does.

// PublishKeys publishes this device's public keys ([S-17-2]): the
// identity key and a signed prekey the first time, later a new signed
// prekey (rotation) or more one-time prekeys. It returns once they are
// durable. IDENTITY_KEY_CHANGED means the device already has another
// identity key: that changes only with a new device. Publishing the same
// keys again is harmless, so the request is repeated after a reconnect.
func (c *Client) PublishKeys(ctx context.Context, keys *pb.KeysPublish) error {
	if keys == nil {
		return fmt.Errorf("%w: no keys to publish", ErrInvalid)
	}
	keys = proto.CloneOf(keys)
	_, err := doAs[*pb.Ok](ctx, c, &request{kind: protocol.KindKeysPublish, body: func(rid uint32) proto.Message {
		m := proto.CloneOf(keys)
		m.Rid = rid
		return m
	}})
	return err
}

// FetchKeys returns the key bundles of user's devices that have keys, or
// of only the listed devices, by device id ([S-17-4]). Each bundle carries
// a one-time prekey that the server hands out to nobody else (none once
// the device ran out). A user with no keys has no bundles; an unknown user
// is NOT_FOUND.
func (c *Client) FetchKeys(ctx context.Context, user uint64, devices ...uint32) ([]*pb.KeyBundle, error) {
	if user == 0 || len(devices) > protocol.MaxCompanions+1 {
		return nil, fmt.Errorf("%w: fetch keys of user %d, %d devices", ErrInvalid, user, len(devices))
	}
	devices = slices.Clone(devices)
	m, err := doAs[*pb.KeyBundles](ctx, c, &request{kind: protocol.KindKeysFetch, body: func(rid uint32) proto.Message {
		return &pb.KeysFetch{Rid: rid, User: user, Devices: devices}
	}})
	if err != nil {
		return nil, err
	}
	return m.Bundles, nil
}

// KeysChanged is an inbox entry: User's devices with keys changed
// ([S-17-5]) — a device was added or revoked, so its security code
// changed. Devices are its devices with keys now. User may be this user:
// another of its devices changed.
type KeysChanged struct {
	// Seq is the entry's position in this user's inbox.
	Seq uint64
	// User is the user whose keys changed.
	User uint64
	// Devices are User's devices with keys now, by id.
	Devices []uint32
}

// PreKeysLow is an inbox entry: device Device of this user has Count
// one-time prekeys left and should publish more ([S-17-6]). A device that
// is not Device ignores it.
type PreKeysLow struct {
	// Seq is the entry's position in this user's inbox.
	Seq uint64
	// Device is the device running low.
	Device uint32
	// Count is how many one-time prekeys it has left.
	Count uint32
}

func (KeysChanged) event() {}
func (PreKeysLow) event()  {}
