package protocol

import "fmt"

// Kind is a frame kind: the low seven bits of a frame's kind byte
// (spec.md [S-3-4]). Kinds 1–63 travel from client to server, 64–127 from
// server to client. Each constant's comment gives its body type in
// parley.proto.
type Kind uint8

// Frame kinds, client to server.
const (
	KindPing        Kind = 1 // Ping: keepalive; answered by Pong
	KindRequestCode Kind = 2 // RequestCode: ask for a verification code
	KindVerify      Kind = 3 // Verify: prove the phone number, register a device
	KindLogin       Kind = 4 // Login: authenticate as one device
	KindSend        Kind = 5 // Send: a message to one user
	KindAck         Kind = 6 // Ack: cumulative acknowledgement of inbox entries
	KindRead        Kind = 7 // Read: mark a peer's messages read
	KindLookup      Kind = 8 // Lookup: phone numbers to user ids

	KindTyping            Kind = 9  // Typing: an ephemeral typing indicator
	KindPresenceSubscribe Kind = 10 // PresenceSubscribe: watch contacts' presence
	KindSetPrivacy        Kind = 11 // SetPrivacy: who sees my presence
	KindLinkRequest       Kind = 12 // LinkRequest: a companion asks for a link code
	KindLinkApprove       Kind = 13 // LinkApprove: the primary approves a link code
	KindDevices           Kind = 14 // Devices: list the account's devices
	KindRevokeDevice      Kind = 15 // RevokeDevice: remove a device
	KindGroupCreate       Kind = 16 // GroupCreate: create a group
	KindGroupUpdate       Kind = 17 // GroupUpdate: change members, roles, name, avatar; leave
	KindGroupGet          Kind = 18 // GroupGet: a group's state
	KindGroupList         Kind = 19 // GroupList: my groups
)

// Frame kinds, server to client.
const (
	KindPong         Kind = 64 // Pong: answers Ping
	KindError        Kind = 65 // Error: a failure, with a code from the error table
	KindGoAway       Kind = 66 // GoAway: the server is closing; reconnect later
	KindCodeSent     Kind = 67 // CodeSent: answers RequestCode
	KindRegistered   Kind = 68 // Registered: answers Verify
	KindLoginOK      Kind = 69 // LoginOk: answers Login
	KindSent         Kind = 70 // Sent: a Send is durable
	KindOK           Kind = 71 // Ok: a request succeeded
	KindLookupResult Kind = 72 // LookupResult: answers Lookup
	KindMessage      Kind = 73 // Message: a message inbox entry
	KindReceipt      Kind = 74 // Receipt: a receipt inbox entry
	KindBatch        Kind = 75 // Batch: a sequence of whole frames, usually compressed
	KindSynced       Kind = 76 // Synced: the backlog has been sent up to a seq

	KindPresence        Kind = 77 // Presence: a contact's online state or last seen
	KindIsTyping        Kind = 78 // IsTyping: relays Typing
	KindLinkCode        Kind = 79 // LinkCode: answers LinkRequest
	KindLinked          Kind = 80 // Linked: the companion is registered
	KindDeviceList      Kind = 81 // DeviceList: answers Devices
	KindGroupInfo       Kind = 82 // GroupInfo: a group's state
	KindGroupListResult Kind = 83 // GroupListResult: answers GroupList
	KindGroupEvent      Kind = 84 // GroupEvent: a group change inbox entry
	KindReceipts        Kind = 85 // Receipts: coalesced group receipts inbox entry
)

// Frame kinds of media (spec.md section 14, media.proto). 34–35 and 98–99
// are reserved for media too.
const (
	KindMediaUpload      Kind = 32 // MediaUpload: ask for an upload slot (client to server)
	KindMediaDownload    Kind = 33 // MediaDownload: ask for a download URL (client to server)
	KindMediaUploadSlot  Kind = 96 // MediaUploadSlot: answers MediaUpload (server to client)
	KindMediaDownloadURL Kind = 97 // MediaDownloadUrl: answers MediaDownload (server to client)
)

// Frame kinds of end-to-end encryption (spec.md section 17, keys.proto).
const (
	KindKeysPublish Kind = 40  // KeysPublish: publish this device's public keys (client to server)
	KindKeysFetch   Kind = 41  // KeysFetch: key bundles of a user's devices (client to server)
	KindKeyBundles  Kind = 104 // KeyBundles: answers KeysFetch (server to client)
	KindKeysChanged Kind = 120 // KeysChanged: a user's devices with keys changed, inbox entry (server to client)
	KindPreKeysLow  Kind = 121 // PreKeysLow: a device runs low on one-time prekeys, inbox entry (server to client)
)

// Frame kinds of the conversation controls (spec.md section 18,
// controls.proto), taken from the top of each range down.
const (
	KindRevoke          Kind = 63  // Revoke: delete a message for everyone (client to server)
	KindBlock           Kind = 62  // Block: block a user (client to server)
	KindUnblock         Kind = 61  // Unblock: end a block (client to server)
	KindBlockList       Kind = 60  // BlockList: the users this user blocks (client to server)
	KindSetTimer        Kind = 59  // SetTimer: a conversation's disappearing-message timer (client to server)
	KindReport          Kind = 58  // Report: report a user to the operator (client to server)
	KindBlockListResult Kind = 111 // BlockListResult: answers BlockList (server to client)
	KindRevoked         Kind = 127 // Revoked: a message was deleted for everyone, inbox entry (server to client)
	KindBlocked         Kind = 126 // Blocked: the account blocked or unblocked a user, inbox entry (server to client)
	KindTimer           Kind = 125 // Timer: a disappearing-message timer changed, inbox entry (server to client)
)

// Frame kinds of push notifications (spec.md section 19, push.proto). 56 is
// reserved for push too.
const (
	KindPushRegister Kind = 57 // PushRegister: register or remove this device's push token (client to server)
)

// FirstReservedEntryKind starts the server kinds (112–127) reserved for
// inbox entries added within version 1: each carries its seq in field 1,
// and a client that does not know one acknowledges it (spec.md [S-12-6]).
const FirstReservedEntryKind Kind = 112

// FlagCompressed is the high bit of the kind byte: the body is a zstd frame
// whose content is the real body (spec.md [S-3-6]).
const FlagCompressed byte = 0x80

// Direction says who may send a frame kind.
type Direction uint8

// Directions.
const (
	ClientToServer Direction = iota + 1
	ServerToClient
)

// String returns "client→server" or "server→client".
func (d Direction) String() string {
	switch d {
	case ClientToServer:
		return "client→server"
	case ServerToClient:
		return "server→client"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// State is a connection state in which a client frame may be sent
// (spec.md section 6).
type State uint8

// Connection states, as sets of bits so a kind can name several.
const (
	StateOpen          State = 1 << iota // TLS done, not logged in
	StateAuthenticated                   // Login succeeded
	StateAny           = StateOpen | StateAuthenticated
)

// KindInfo describes one frame kind.
type KindInfo struct {
	Kind      Kind
	Name      string    // the parley.proto enum name without "KIND_"
	Message   string    // the parley.proto message held in the body; "" for Batch
	Direction Direction // who sends it
	States    State     // for client frames: the states in which it is allowed
	Entry     bool      // an inbox entry: carries seq and must be acknowledged
}

// Kinds lists every frame kind of protocol version 1 in numeric order.
var Kinds = []KindInfo{
	{KindPing, "PING", "Ping", ClientToServer, StateAny, false},
	{KindRequestCode, "REQUEST_CODE", "RequestCode", ClientToServer, StateOpen, false},
	{KindVerify, "VERIFY", "Verify", ClientToServer, StateOpen, false},
	{KindLogin, "LOGIN", "Login", ClientToServer, StateOpen, false},
	{KindSend, "SEND", "Send", ClientToServer, StateAuthenticated, false},
	{KindAck, "ACK", "Ack", ClientToServer, StateAuthenticated, false},
	{KindRead, "READ", "Read", ClientToServer, StateAuthenticated, false},
	{KindLookup, "LOOKUP", "Lookup", ClientToServer, StateAuthenticated, false},
	{KindTyping, "TYPING", "Typing", ClientToServer, StateAuthenticated, false},
	{KindPresenceSubscribe, "PRESENCE_SUBSCRIBE", "PresenceSubscribe", ClientToServer, StateAuthenticated, false},
	{KindSetPrivacy, "SET_PRIVACY", "SetPrivacy", ClientToServer, StateAuthenticated, false},
	{KindLinkRequest, "LINK_REQUEST", "LinkRequest", ClientToServer, StateOpen, false},
	{KindLinkApprove, "LINK_APPROVE", "LinkApprove", ClientToServer, StateAuthenticated, false},
	{KindDevices, "DEVICES", "Devices", ClientToServer, StateAuthenticated, false},
	{KindRevokeDevice, "REVOKE_DEVICE", "RevokeDevice", ClientToServer, StateAuthenticated, false},
	{KindGroupCreate, "GROUP_CREATE", "GroupCreate", ClientToServer, StateAuthenticated, false},
	{KindGroupUpdate, "GROUP_UPDATE", "GroupUpdate", ClientToServer, StateAuthenticated, false},
	{KindGroupGet, "GROUP_GET", "GroupGet", ClientToServer, StateAuthenticated, false},
	{KindGroupList, "GROUP_LIST", "GroupList", ClientToServer, StateAuthenticated, false},
	{KindMediaUpload, "MEDIA_UPLOAD", "MediaUpload", ClientToServer, StateAuthenticated, false},
	{KindMediaDownload, "MEDIA_DOWNLOAD", "MediaDownload", ClientToServer, StateAuthenticated, false},
	{KindKeysPublish, "KEYS_PUBLISH", "KeysPublish", ClientToServer, StateAuthenticated, false},
	{KindKeysFetch, "KEYS_FETCH", "KeysFetch", ClientToServer, StateAuthenticated, false},
	{KindPushRegister, "PUSH_REGISTER", "PushRegister", ClientToServer, StateAuthenticated, false},
	{KindReport, "REPORT", "Report", ClientToServer, StateAuthenticated, false},
	{KindSetTimer, "SET_TIMER", "SetTimer", ClientToServer, StateAuthenticated, false},
	{KindBlockList, "BLOCK_LIST", "BlockList", ClientToServer, StateAuthenticated, false},
	{KindUnblock, "UNBLOCK", "Unblock", ClientToServer, StateAuthenticated, false},
	{KindBlock, "BLOCK", "Block", ClientToServer, StateAuthenticated, false},
	{KindRevoke, "REVOKE", "Revoke", ClientToServer, StateAuthenticated, false},
	{KindPong, "PONG", "Pong", ServerToClient, 0, false},
	{KindError, "ERROR", "Error", ServerToClient, 0, false},
	{KindGoAway, "GOAWAY", "GoAway", ServerToClient, 0, false},
	{KindCodeSent, "CODE_SENT", "CodeSent", ServerToClient, 0, false},
	{KindRegistered, "REGISTERED", "Registered", ServerToClient, 0, false},
	{KindLoginOK, "LOGIN_OK", "LoginOk", ServerToClient, 0, false},
	{KindSent, "SENT", "Sent", ServerToClient, 0, false},
	{KindOK, "OK", "Ok", ServerToClient, 0, false},
	{KindLookupResult, "LOOKUP_RESULT", "LookupResult", ServerToClient, 0, false},
	{KindMessage, "MESSAGE", "Message", ServerToClient, 0, true},
	{KindReceipt, "RECEIPT", "Receipt", ServerToClient, 0, true},
	{KindBatch, "BATCH", "", ServerToClient, 0, false},
	{KindSynced, "SYNCED", "Synced", ServerToClient, 0, false},
	{KindPresence, "PRESENCE", "Presence", ServerToClient, 0, false},
	{KindIsTyping, "IS_TYPING", "IsTyping", ServerToClient, 0, false},
	{KindLinkCode, "LINK_CODE", "LinkCode", ServerToClient, 0, false},
	{KindLinked, "LINKED", "Linked", ServerToClient, 0, false},
	{KindDeviceList, "DEVICE_LIST", "DeviceList", ServerToClient, 0, false},
	{KindGroupInfo, "GROUP_INFO", "GroupInfo", ServerToClient, 0, false},
	{KindGroupListResult, "GROUP_LIST_RESULT", "GroupListResult", ServerToClient, 0, false},
	{KindGroupEvent, "GROUP_EVENT", "GroupEvent", ServerToClient, 0, true},
	{KindReceipts, "RECEIPTS", "Receipts", ServerToClient, 0, true},
	{KindMediaUploadSlot, "MEDIA_UPLOAD_SLOT", "MediaUploadSlot", ServerToClient, 0, false},
	{KindMediaDownloadURL, "MEDIA_DOWNLOAD_URL", "MediaDownloadUrl", ServerToClient, 0, false},
	{KindKeyBundles, "KEY_BUNDLES", "KeyBundles", ServerToClient, 0, false},
	{KindBlockListResult, "BLOCK_LIST_RESULT", "BlockListResult", ServerToClient, 0, false},
	{KindKeysChanged, "KEYS_CHANGED", "KeysChanged", ServerToClient, 0, true},
	{KindPreKeysLow, "PREKEYS_LOW", "PreKeysLow", ServerToClient, 0, true},
	{KindTimer, "TIMER", "Timer", ServerToClient, 0, true},
	{KindBlocked, "BLOCKED", "Blocked", ServerToClient, 0, true},
	{KindRevoked, "REVOKED", "Revoked", ServerToClient, 0, true},
}

var kindIndex = func() (idx [128]int8) {
	for i := range idx {
		idx[i] = -1
	}
	for i, k := range Kinds {
		idx[k.Kind] = int8(i)
	}
	return idx
}()

// Info returns the description of k, and false if k is not a kind of this
// protocol version.
func (k Kind) Info() (KindInfo, bool) {
	if k >= 128 || kindIndex[k] < 0 {
		return KindInfo{}, false
	}
	return Kinds[kindIndex[k]], true
}

// String returns the kind's name, or "Kind(n)" for an unknown kind.
func (k Kind) String() string {
	if info, ok := k.Info(); ok {
		return info.Name
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}
