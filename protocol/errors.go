package protocol

import (
	"fmt"

	"github.com/parley-im/parley/protocol/pb"
)

// Code is an error code carried by Error and GoAway frames. The values are
// parley.proto's ErrorCode enum; Codes below holds what each one means.
type Code = pb.ErrorCode

// Error codes (spec.md section 11). Connection-scope codes are below 32.
const (
	CodeMalformedFrame     = pb.ErrorCode_ERROR_MALFORMED_FRAME
	CodeFrameTooLarge      = pb.ErrorCode_ERROR_FRAME_TOO_LARGE
	CodeUnsupportedVersion = pb.ErrorCode_ERROR_UNSUPPORTED_VERSION
	CodeUnauthenticated    = pb.ErrorCode_ERROR_UNAUTHENTICATED
	CodeAuthFailed         = pb.ErrorCode_ERROR_AUTH_FAILED
	CodeDeviceRevoked      = pb.ErrorCode_ERROR_DEVICE_REVOKED
	CodeSessionReplaced    = pb.ErrorCode_ERROR_SESSION_REPLACED
	CodeIdleTimeout        = pb.ErrorCode_ERROR_IDLE_TIMEOUT
	CodeSlowConsumer       = pb.ErrorCode_ERROR_SLOW_CONSUMER
	CodeShuttingDown       = pb.ErrorCode_ERROR_SHUTTING_DOWN
	CodeProtocolViolation  = pb.ErrorCode_ERROR_PROTOCOL_VIOLATION
	CodeInputOverflow      = pb.ErrorCode_ERROR_INPUT_OVERFLOW

	CodeUnknownKind     = pb.ErrorCode_ERROR_UNKNOWN_KIND
	CodeInvalidArgument = pb.ErrorCode_ERROR_INVALID_ARGUMENT
	CodeWrongState      = pb.ErrorCode_ERROR_WRONG_STATE
	CodeRateLimited     = pb.ErrorCode_ERROR_RATE_LIMITED
	CodeOverloaded      = pb.ErrorCode_ERROR_OVERLOADED
	CodeNotFound        = pb.ErrorCode_ERROR_NOT_FOUND
	CodeMessageTooLarge = pb.ErrorCode_ERROR_MESSAGE_TOO_LARGE
	CodeCodeInvalid     = pb.ErrorCode_ERROR_CODE_INVALID
	CodeCodeExpired     = pb.ErrorCode_ERROR_CODE_EXPIRED
	CodeTooManyAttempts = pb.ErrorCode_ERROR_TOO_MANY_ATTEMPTS
	CodeInternal        = pb.ErrorCode_ERROR_INTERNAL
	CodeNotMember       = pb.ErrorCode_ERROR_NOT_MEMBER
	CodeNotAdmin        = pb.ErrorCode_ERROR_NOT_ADMIN
	CodeGroupFull       = pb.ErrorCode_ERROR_GROUP_FULL
	CodeTooManyGroups   = pb.ErrorCode_ERROR_TOO_MANY_GROUPS
	CodeTooManyDevices  = pb.ErrorCode_ERROR_TOO_MANY_DEVICES
	CodeLinkExpired     = pb.ErrorCode_ERROR_LINK_EXPIRED
	CodeNotPrimary      = pb.ErrorCode_ERROR_NOT_PRIMARY
)

// Error codes of media (spec.md section 14), message scope. The media
// endpoint sends them in its Parley-Error header too.
const (
	CodeMediaTooLarge       = pb.ErrorCode_ERROR_MEDIA_TOO_LARGE
	CodeMediaNotFound       = pb.ErrorCode_ERROR_MEDIA_NOT_FOUND
	CodeMediaNotReady       = pb.ErrorCode_ERROR_MEDIA_NOT_READY
	CodeMediaURLExpired     = pb.ErrorCode_ERROR_MEDIA_URL_EXPIRED
	CodeMediaBadSignature   = pb.ErrorCode_ERROR_MEDIA_BAD_SIGNATURE
	CodeMediaHashMismatch   = pb.ErrorCode_ERROR_MEDIA_HASH_MISMATCH
	CodeMediaSizeMismatch   = pb.ErrorCode_ERROR_MEDIA_SIZE_MISMATCH
	CodeMediaOffsetMismatch = pb.ErrorCode_ERROR_MEDIA_OFFSET_MISMATCH
	CodeMediaUploadBusy     = pb.ErrorCode_ERROR_MEDIA_UPLOAD_BUSY
	CodeMediaUnavailable    = pb.ErrorCode_ERROR_MEDIA_UNAVAILABLE
	// CodeMediaStorageFull: the node is short of disk space and takes no
	// new upload; downloads keep working.
	CodeMediaStorageFull = pb.ErrorCode_ERROR_MEDIA_STORAGE_FULL
	// CodeMediaQuotaExceeded: the user's unfinished uploads would hold
	// more bytes than the staging quota allows.
	CodeMediaQuotaExceeded = pb.ErrorCode_ERROR_MEDIA_QUOTA_EXCEEDED
	// CodeMediaTooManyTransfers: the user has as many transfers in
	// progress as the endpoint allows one user now.
	CodeMediaTooManyTransfers = pb.ErrorCode_ERROR_MEDIA_TOO_MANY_TRANSFERS
)

// Error codes of the storage limits (spec.md section 8.4), message scope.
const (
	// CodeStorageFull: the node is short of disk space and stores no new
	// data; acknowledgements and deliveries keep working.
	CodeStorageFull = pb.ErrorCode_ERROR_STORAGE_FULL
	// CodeInboxFull: the recipient's queue of undelivered entries is at its
	// quota.
	CodeInboxFull = pb.ErrorCode_ERROR_INBOX_FULL
	// CodeCMIDReused: the sending device used this cmid before for a
	// different message to the same recipient.
	CodeCMIDReused = pb.ErrorCode_ERROR_CMID_REUSED
)

// Error codes of verification code delivery (spec.md [S-9-16]), message
// scope: answers to REQUEST_CODE when the server's SMS gateway did not
// take the code.
const (
	// CodeCodeUndeliverable: the gateway refused the phone number for good
	// (not a valid or reachable mobile number, a country it does not
	// serve, a number that opted out); no code was sent.
	CodeCodeUndeliverable = pb.ErrorCode_ERROR_CODE_UNDELIVERABLE
	// CodeCodeDeliveryFailed: the gateway could not be reached or did not
	// take the message within the server's deadline (down, throttling,
	// timing out), or the server's queue of codes to send is full. The
	// code may still arrive late.
	CodeCodeDeliveryFailed = pb.ErrorCode_ERROR_CODE_DELIVERY_FAILED
)

// Error codes of end-to-end encryption (spec.md section 17), message scope.
const (
	// CodeDevicesChanged: a Send's envelopes do not name exactly the
	// current devices with keys of the recipient and of the sender; the
	// Error lists them.
	CodeDevicesChanged = pb.ErrorCode_ERROR_DEVICES_CHANGED
	// CodeIdentityKeyChanged: a KeysPublish names another identity key
	// than the one the device published.
	CodeIdentityKeyChanged = pb.ErrorCode_ERROR_IDENTITY_KEY_CHANGED
)

// Error codes of the conversation controls (spec.md section 18), message
// scope; 76–82 are theirs.
const (
	// CodeNotSender: only a message's sender may revoke it.
	CodeNotSender = pb.ErrorCode_ERROR_NOT_SENDER
	// CodeRevokeExpired: the message is older than the server lets a
	// sender revoke.
	CodeRevokeExpired = pb.ErrorCode_ERROR_REVOKE_EXPIRED
	// CodeMessageNotFound: no message with this id is known in this
	// conversation.
	CodeMessageNotFound = pb.ErrorCode_ERROR_MESSAGE_NOT_FOUND
	// CodeTooManyBlocks: the account blocks MaxBlocks users already.
	CodeTooManyBlocks = pb.ErrorCode_ERROR_TOO_MANY_BLOCKS
)

// Error codes of push notifications (spec.md section 19), message scope.
// 85 is reserved for push.
const (
	// CodePushUnavailable: the node does not offer the PushRegister's
	// provider.
	CodePushUnavailable = pb.ErrorCode_ERROR_PUSH_UNAVAILABLE
	// CodePushTokenInvalid: the token is empty with a provider, longer
	// than MaxPushToken, or not of the provider's form.
	CodePushTokenInvalid = pb.ErrorCode_ERROR_PUSH_TOKEN_INVALID
)

// Error codes of a cluster (docs/cluster.md), message scope; 86–89 are
// theirs.
const (
	// CodeShardUnavailable: the node that serves the user's shard cannot
	// commit for it now (it cannot tell that it still owns the shard: its
	// lease in doubt, or the shard moving). Nothing was stored.
	CodeShardUnavailable = pb.ErrorCode_ERROR_SHARD_UNAVAILABLE
)

// Scope says what an error code ends.
type Scope uint8

// Scopes.
const (
	// ScopeConnection: the server closes the connection after the frame.
	ScopeConnection Scope = iota + 1
	// ScopeMessage: only the request (rid) or send (cmid) failed.
	ScopeMessage
)

// String returns "connection" or "message".
func (s Scope) String() string {
	switch s {
	case ScopeConnection:
		return "connection"
	case ScopeMessage:
		return "message"
	}
	return fmt.Sprintf("Scope(%d)", uint8(s))
}

// CodeInfo describes one error code: the row of spec.md's error table.
type CodeInfo struct {
	Code   Code
	Name   string // parley.proto name without "ERROR_"
	Scope  Scope
	Action string // what a client does on receiving it
}

// Codes is the error table, in numeric order.
var Codes = []CodeInfo{
	{CodeMalformedFrame, "MALFORMED_FRAME", ScopeConnection, "Fix the client: a frame could not be decoded. Reconnect with backoff."},
	{CodeFrameTooLarge, "FRAME_TOO_LARGE", ScopeConnection, "Fix the client: a frame exceeded the limit. Reconnect with backoff."},
	{CodeUnsupportedVersion, "UNSUPPORTED_VERSION", ScopeConnection, "Upgrade the client; do not reconnect with the same version."},
	{CodeUnauthenticated, "UNAUTHENTICATED", ScopeConnection, "Log in before sending this frame."},
	{CodeAuthFailed, "AUTH_FAILED", ScopeConnection, "The credential is wrong or the device unknown: register again."},
	{CodeDeviceRevoked, "DEVICE_REVOKED", ScopeConnection, "The device was removed from the account: delete local state, register again."},
	{CodeSessionReplaced, "SESSION_REPLACED", ScopeConnection, "The same device logged in on another connection: do not reconnect automatically."},
	{CodeIdleTimeout, "IDLE_TIMEOUT", ScopeConnection, "Nothing arrived within the idle timeout: reconnect, and send Ping at the heartbeat interval."},
	{CodeSlowConsumer, "SLOW_CONSUMER", ScopeConnection, "The client read too slowly: reconnect; the stream resumes from the cursor."},
	{CodeShuttingDown, "SHUTTING_DOWN", ScopeConnection, "The server is stopping: reconnect after reconnect_after_ms, with jitter."},
	{CodeProtocolViolation, "PROTOCOL_VIOLATION", ScopeConnection, "Fix the client: a well-formed frame broke a rule (a server-only kind, an Ack beyond what was delivered)."},
	{CodeInputOverflow, "INPUT_OVERFLOW", ScopeConnection, "The client sent faster than the server could take: reconnect and wait for answers before sending more."},
	{CodeUnknownKind, "UNKNOWN_KIND", ScopeMessage, "The server does not know this frame kind: fall back to version 1 behaviour."},
	{CodeInvalidArgument, "INVALID_ARGUMENT", ScopeMessage, "A field is missing or out of range: fix the request; do not retry it unchanged."},
	{CodeWrongState, "WRONG_STATE", ScopeMessage, "The frame is not allowed in this state (for example a second Login): do not retry it."},
	{CodeRateLimited, "RATE_LIMITED", ScopeMessage, "Retry after retry_after_ms."},
	{CodeOverloaded, "OVERLOADED", ScopeMessage, "The server is busy: retry after retry_after_ms with the same cmid or a new rid."},
	{CodeNotFound, "NOT_FOUND", ScopeMessage, "The user or device does not exist: do not retry."},
	{CodeMessageTooLarge, "MESSAGE_TOO_LARGE", ScopeMessage, "The body exceeds the limit: send large content as media."},
	{CodeCodeInvalid, "CODE_INVALID", ScopeMessage, "The verification code is wrong: let the user try again."},
	{CodeCodeExpired, "CODE_EXPIRED", ScopeMessage, "The verification code expired or was never requested: request a new one."},
	{CodeTooManyAttempts, "TOO_MANY_ATTEMPTS", ScopeMessage, "Too many wrong codes: request a new code."},
	{CodeInternal, "INTERNAL", ScopeMessage, "A server fault: retry later with backoff, with the same cmid or rid."},
	{CodeNotMember, "NOT_MEMBER", ScopeMessage, "The user is not a member of the group (or the group does not exist): do not retry."},
	{CodeNotAdmin, "NOT_ADMIN", ScopeMessage, "Only group admins may do this: do not retry."},
	{CodeGroupFull, "GROUP_FULL", ScopeMessage, "The group has the maximum number of members."},
	{CodeTooManyGroups, "TOO_MANY_GROUPS", ScopeMessage, "The user is in the maximum number of groups."},
	{CodeTooManyDevices, "TOO_MANY_DEVICES", ScopeMessage, "The account has the maximum number of companion devices: revoke one first."},
	{CodeLinkExpired, "LINK_EXPIRED", ScopeMessage, "The link code is unknown, used or expired: request a new one on the companion."},
	{CodeNotPrimary, "NOT_PRIMARY", ScopeMessage, "Only the primary device may do this: do it from the primary."},
	{CodeMediaTooLarge, "MEDIA_TOO_LARGE", ScopeMessage, "The media exceeds its type's limit: do not retry it unchanged."},
	{CodeMediaNotFound, "MEDIA_NOT_FOUND", ScopeMessage, "The media id is unknown, was refused or has expired: do not retry; upload the media again if you have it."},
	{CodeMediaNotReady, "MEDIA_NOT_READY", ScopeMessage, "The media is still being uploaded: retry later with backoff."},
	{CodeMediaURLExpired, "MEDIA_URL_EXPIRED", ScopeMessage, "The media URL expired: ask for a fresh URL (MEDIA_UPLOAD with resume, or MEDIA_DOWNLOAD) and continue."},
	{CodeMediaBadSignature, "MEDIA_BAD_SIGNATURE", ScopeMessage, "The media URL was altered or used for another media or method: fix the client; use URLs as given."},
	{CodeMediaHashMismatch, "MEDIA_HASH_MISMATCH", ScopeMessage, "The uploaded bytes do not have the declared SHA-256: the upload is discarded; ask for a new slot."},
	{CodeMediaSizeMismatch, "MEDIA_SIZE_MISMATCH", ScopeMessage, "The upload does not end at the declared size: the upload is discarded; ask for a new slot."},
	{CodeMediaOffsetMismatch, "MEDIA_OFFSET_MISMATCH", ScopeMessage, "The PUT does not start where the server stands: continue from Upload-Offset."},
	{CodeMediaUploadBusy, "MEDIA_UPLOAD_BUSY", ScopeMessage, "Another PUT is writing this upload: wait Retry-After, ask HEAD for the offset, continue."},
	{CodeMediaUnavailable, "MEDIA_UNAVAILABLE", ScopeMessage, "The server offers no media: do not retry on this server."},
	{CodeStorageFull, "STORAGE_FULL", ScopeMessage, "The server is short of disk space and stores nothing new: retry the identical SEND or request after retry_after_ms; acknowledgements and deliveries keep working."},
	{CodeInboxFull, "INBOX_FULL", ScopeMessage, "The recipient's queue of undelivered messages is full: retry the identical SEND later (after retry_after_ms at the earliest); it drains as the recipient comes online."},
	{CodeCMIDReused, "CMID_REUSED", ScopeMessage, "This device sent another message with this cmid: the client lost its cmid counter. Continue above LoginOk.max_cmid and above this cmid, and send the message again with a new cmid."},
	{CodeMediaStorageFull, "MEDIA_STORAGE_FULL", ScopeMessage, "The server is short of disk space and takes no new uploads: retry after retry_after_ms (Retry-After); downloads keep working."},
	{CodeMediaQuotaExceeded, "MEDIA_QUOTA_EXCEEDED", ScopeMessage, "The user's unfinished uploads hold the most bytes the server allows: finish (resume) them first, or retry after they expire."},
	{CodeMediaTooManyTransfers, "MEDIA_TOO_MANY_TRANSFERS", ScopeMessage, "The user has as many media transfers in progress as the server allows one user now: retry after Retry-After, best once one of them has ended."},
	{CodeCodeUndeliverable, "CODE_UNDELIVERABLE", ScopeMessage, "The SMS gateway refused this phone number (invalid, not a mobile, an unserved country, opted out): no code was sent. Do not retry with the same number; ask the user to check it."},
	{CodeCodeDeliveryFailed, "CODE_DELIVERY_FAILED", ScopeMessage, "The server could not hand the code to its SMS gateway now: let the user ask again after retry_after_ms. The code may still arrive late and verifies until a new one is requested."},
	{CodeDevicesChanged, "DEVICES_CHANGED", ScopeMessage, "The envelopes do not match the current devices (listed in Error.devices): fetch the bundles of the new devices, drop the sessions of the gone ones, encrypt again and resend under the same cmid ([S-17-9]); nothing was stored."},
	{CodeIdentityKeyChanged, "IDENTITY_KEY_CHANGED", ScopeMessage, "The device already published another identity key: an identity key changes only with a new device; register or link a new device."},
	{CodeNotSender, "NOT_SENDER", ScopeMessage, "Only the sender of a message may delete it for everyone: do not retry."},
	{CodeRevokeExpired, "REVOKE_EXPIRED", ScopeMessage, "The message is too old to be deleted for everyone: do not retry; delete it on this device only."},
	{CodeMessageNotFound, "MESSAGE_NOT_FOUND", ScopeMessage, "No message with this id is known in this conversation: do not retry."},
	{CodeTooManyBlocks, "TOO_MANY_BLOCKS", ScopeMessage, "The account blocks as many users as the server allows: unblock one first."},
	{CodePushUnavailable, "PUSH_UNAVAILABLE", ScopeMessage, "This server does not offer the push provider: do not retry it here; register another provider or rely on the connection."},
	{CodePushTokenInvalid, "PUSH_TOKEN_INVALID", ScopeMessage, "The push token is not of the provider's form (or the webhook URL not https): do not retry it unchanged; fetch a new token from the provider."},
	{CodeShardUnavailable, "SHARD_UNAVAILABLE", ScopeMessage, "The node that holds this user's shard cannot prove it still owns it (cut off from the cluster's coordinator): nothing was stored; retry after retry_after_ms with the same cmid or a new rid."},
}

// LookupCode returns the description of c, and false if c is not a code
// of this protocol version.
func LookupCode(c Code) (CodeInfo, bool) {
	for _, info := range Codes {
		if info.Code == c {
			return info, true
		}
	}
	return CodeInfo{}, false
}

// Retried reports whether a SEND or request refused with c is sent again,
// identical (the same cmid, or a new rid), after retry_after_ms
// ([S-8-14]): RATE_LIMITED, OVERLOADED, INTERNAL, STORAGE_FULL,
// INBOX_FULL and SHARD_UNAVAILABLE. The server keeps a sender's order
// across these refusals ([S-8-13]).
func Retried(c Code) bool {
	switch c {
	case CodeRateLimited, CodeOverloaded, CodeInternal, CodeStorageFull, CodeInboxFull, CodeShardUnavailable:
		return true
	}
	return false
}

// ScopeOf returns the scope of c. Unknown codes from 1 to 31 have connection
// scope and the rest message scope (spec.md [S-11-2]).
func ScopeOf(c Code) Scope {
	if c > 0 && c < 32 {
		return ScopeConnection
	}
	return ScopeMessage
}
