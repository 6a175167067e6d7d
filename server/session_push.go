package server

import (
	"net/url"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// handlePushRegister sets or removes this device's push registration on
// its user's shard ([S-19-1]); the token's form is checked here, whether
// the node offers the provider on the shard.
func (c *conn) handlePushRegister(body []byte, w *buffer) verdict {
	var m pb.PushRegister
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if m.Token != "" && !pushTokenValid(m.Provider, m.Token) {
		refuse(w, protocol.CodePushTokenInvalid, m.Rid, 0)
		return verdict{}
	}
	return c.request(storage.Op{Kind: storage.OpPushRegister, User: c.user, Device: c.device, RID: m.Rid, Conn: c.ref,
		Push: &storage.PushOp{Provider: m.Provider, Token: m.Token, ShowSender: m.ShowSender}}, m.Rid, w)
}

// pushTokenValid reports whether a non-empty token is of its provider's
// form ([S-19-1]).
func pushTokenValid(p pb.PushProvider, token string) bool {
	if len(token) > protocol.MaxPushToken {
		return false
	}
	switch p {
	case pb.PushProvider_PUSH_APNS:
		if len(token) < 64 || len(token) > 200 {
			return false
		}
		for i := 0; i < len(token); i++ {
			if c := token[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
		return true
	case pb.PushProvider_PUSH_FCM:
		for i := 0; i < len(token); i++ {
			if c := token[i]; c <= ' ' || c > '~' {
				return false
			}
		}
		return true
	case pb.PushProvider_PUSH_WEBHOOK:
		u, err := url.Parse(token)
		return err == nil && u.Scheme == "https" && u.Host != "" && u.User == nil && u.Opaque == ""
	}
	return false
}
