package protocol

import "time"

// Version is the protocol version this package describes. A client sends
// it in Login and RequestCode (spec.md [S-12-1]).
const Version = 1

// Limits of protocol version 1 (spec.md section 4). A frame or field over
// a limit is refused with the error code named beside it.
const (
	// MaxFrameBody is the largest body, in bytes, a frame may declare:
	// FRAME_TOO_LARGE. It applies to the body after decompression too.
	MaxFrameBody = 256 << 10

	// MaxClientFrameBody is the largest body, in bytes, of a frame a client
	// sends: FRAME_TOO_LARGE.
	MaxClientFrameBody = 80 << 10

	// MaxMessageBody is the largest Send body in bytes: MESSAGE_TOO_LARGE.
	MaxMessageBody = 64 << 10

	// LazyAckMaxBody is the body size, in bytes, from which a client
	// acknowledges a MESSAGE within 50 ms even when nobody waits for its
	// ACK, so that ACKs it holds longer never reach the server's byte
	// bound of the delivery window ([S-8-5]).
	LazyAckMaxBody = 4 << 10

	// MaxHeaderLen is the largest frame header in bytes: a uvarint length of
	// at most three bytes plus the kind byte.
	MaxHeaderLen = 4

	// MaxLookupPhones is the most phone numbers in one Lookup: INVALID_ARGUMENT.
	MaxLookupPhones = 256

	// MaxDeviceName is the longest Verify device_name in bytes: INVALID_ARGUMENT.
	MaxDeviceName = 64

	// CredentialLen is the length of a device credential in bytes.
	CredentialLen = 32

	// MaxGroupMembers is the most members a group has: GROUP_FULL.
	MaxGroupMembers = 1024

	// MaxGroupsPerUser is the most groups a user belongs to: TOO_MANY_GROUPS.
	MaxGroupsPerUser = 512

	// MaxGroupName is the longest group name in bytes: INVALID_ARGUMENT.
	MaxGroupName = 100

	// MaxAvatar is the longest avatar reference in bytes: INVALID_ARGUMENT.
	MaxAvatar = 256

	// MaxCompanions is how many companion devices an account may link
	// besides its primary: TOO_MANY_DEVICES.
	MaxCompanions = 4

	// MaxPresenceSubscriptions is the most users one PresenceSubscribe
	// names: INVALID_ARGUMENT.
	MaxPresenceSubscriptions = 256

	// LinkCodeLen is the length of a link code in characters.
	LinkCodeLen = 16

	// MinCompress is the smallest body, in bytes, the server compresses;
	// smaller bodies never pay for the zstd frame header.
	MinCompress = 512
)

// Limits of the key directory (spec.md section 17). A KeysPublish over
// them is refused with INVALID_ARGUMENT.
const (
	// KeyLen is the length in bytes of a public key: the type byte 0x05
	// and a 32-byte Curve25519 key.
	KeyLen = 33

	// SignatureLen is the length in bytes of a signed prekey's signature.
	SignatureLen = 64

	// MaxPreKeysPerPublish is the most one-time prekeys one KeysPublish
	// adds.
	MaxPreKeysPerPublish = 100

	// MaxPreKeys is the most one-time prekeys the server holds for one
	// device.
	MaxPreKeys = 200

	// PreKeysLow is how many one-time prekeys a device has left when the
	// server appends PREKEYS_LOW to its user's inbox.
	PreKeysLow = 10
)

// MessageIDEpochMS is the Unix time in milliseconds from which the
// millisecond field of a server message id counts: 2025-01-01T00:00:00Z
// (spec.md [S-2-4]).
const MessageIDEpochMS = 1735689600000

// MessageIDTimeShift is how far the millisecond field of a message id is
// shifted left: id >> MessageIDTimeShift is milliseconds since
// MessageIDEpoch.
const MessageIDTimeShift = 22

// MessageTime returns the server time encoded in message id id.
func MessageTime(id uint64) time.Time {
	return time.UnixMilli(MessageIDEpochMS + int64(id>>MessageIDTimeShift))
}

// Limits of media (spec.md section 14). A MediaUpload whose size is over
// its type's limit is refused with MEDIA_TOO_LARGE.
const (
	// MaxMediaImage is the largest image in bytes (16 MiB).
	MaxMediaImage = 16 << 20

	// MaxMediaVideo is the largest video in bytes (1 GiB).
	MaxMediaVideo = 1 << 30

	// MaxMediaVoice is the largest voice note in bytes (16 MiB).
	MaxMediaVoice = 16 << 20

	// MaxMediaDocument is the largest document in bytes (2 GiB).
	MaxMediaDocument = 2 << 30

	// MediaIDLen is the length of a media id in bytes: 128 random bits.
	MediaIDLen = 16
)

// Limits of the conversation controls (spec.md section 18).
const (
	// MaxBlocks is the most users one account blocks: TOO_MANY_BLOCKS.
	MaxBlocks = 1024

	// MaxTimer is the longest disappearing-message timer in seconds (366
	// days): INVALID_ARGUMENT.
	MaxTimer = 366 * 24 * 3600

	// MaxReportMessages is the most messages one Report names:
	// INVALID_ARGUMENT.
	MaxReportMessages = 10

	// MaxReportReason is the longest Report reason in bytes:
	// INVALID_ARGUMENT.
	MaxReportReason = 500
)

// Limits of push notifications (spec.md section 19).
const (
	// MaxPushToken is the longest PushRegister token in bytes (a device
	// token, a registration token or an endpoint URL): PUSH_TOKEN_INVALID.
	MaxPushToken = 1024
)

// AckIsAwaited reports whether the ACK of a MESSAGE is one to send
// promptly under [S-8-5]: its sender waits for the delivered receipt the
// ACK makes (a one-to-one message from another user; self is the
// receiving user), or its body is LazyAckMaxBody bytes or more. Any other
// ACK may wait up to a second.
func AckIsAwaited(group, from, self uint64, bodyLen int) bool {
	return (group == 0 && from != self) || bodyLen >= LazyAckMaxBody
}
