package cluster

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// NumSlots is the number of slots users and phone numbers hash to
// (storage.NumSlots): the slot map has one shard number per slot.
const NumSlots = 4096

// MaxShards is the largest shard count a cluster may be created with: a
// shard owns at least one slot.
const MaxShards = NumSlots

// DefaultPrefix is the etcd key prefix of a cluster when Config.Prefix is
// empty.
const DefaultPrefix = "/parley/"

// Member is a live node as registered under its lease.
type Member struct {
	// ID is the node's number in the cluster, 1 or more (0 is a single
	// node's ConnRef.Node and never a member).
	ID uint32 `json:"id"`
	// Client is the host:port clients connect to.
	Client string `json:"client"`
	// Link is the host:port other nodes open node links to.
	Link string `json:"link"`
	// Gen is the node's boot generation (storage.ConnRef.Gen): it grows at
	// every start of the node.
	Gen uint32 `json:"gen"`
}

// Placement is where a shard is served: by node Node since epoch Epoch.
// The zero Placement is an unplaced shard.
type Placement struct {
	Node  uint32 `json:"node"`
	Epoch uint64 `json:"epoch"`
}

// keys names a cluster's etcd keys under one prefix.
type keys struct{ prefix string }

func (k keys) shards() string        { return k.prefix + "shards" }
func (k keys) slots() string         { return k.prefix + "slots" }
func (k keys) epoch() string         { return k.prefix + "epoch" }
func (k keys) nodes() string         { return k.prefix + "nodes/" }
func (k keys) node(id uint32) string { return fmt.Sprintf("%snodes/%010d", k.prefix, id) }
func (k keys) places() string        { return k.prefix + "place/" }
func (k keys) place(s uint16) string { return fmt.Sprintf("%splace/%05d", k.prefix, s) }
func (k keys) moves() string         { return k.prefix + "moves/" }
func (k keys) move(s uint16) string  { return fmt.Sprintf("%smoves/%05d", k.prefix, s) }
func (k keys) leader() string        { return k.prefix + "leader/" }
func (k keys) nodeOf(key string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(key, k.nodes()), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("cluster: bad key %q: %w", key, err)
	}
	return uint32(n), nil
}
func (k keys) shardOf(key, dir string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(key, dir), 10, 16)
	if err != nil {
		return 0, fmt.Errorf("cluster: bad key %q: %w", key, err)
	}
	return uint16(n), nil
}

// SlotMap returns the slot → shard map of a cluster of count shards: equal
// contiguous ranges, slot s on shard s*count/NumSlots, the same map
// router.New builds. The map is fixed when the cluster is created.
func SlotMap(count int) []uint16 {
	m := make([]uint16, NumSlots)
	for s := range m {
		m[s] = uint16(s * count / NumSlots)
	}
	return m
}

func encodeSlots(m []uint16) []byte {
	b := make([]byte, 0, 2*len(m))
	for _, s := range m {
		b = binary.BigEndian.AppendUint16(b, s)
	}
	return b
}

func decodeSlots(b []byte, count int) ([]uint16, error) {
	if len(b) != 2*NumSlots {
		return nil, fmt.Errorf("cluster: slot map of %d bytes, want %d", len(b), 2*NumSlots)
	}
	m := make([]uint16, NumSlots)
	for s := range m {
		m[s] = binary.BigEndian.Uint16(b[2*s:])
		if int(m[s]) >= count {
			return nil, fmt.Errorf("cluster: slot %d on shard %d of %d", s, m[s], count)
		}
	}
	return m, nil
}

func decodeCount(b []byte) (int, error) {
	n, err := strconv.Atoi(string(b))
	if err != nil || n <= 0 || n > MaxShards {
		return 0, fmt.Errorf("cluster: bad shard count %q", b)
	}
	return n, nil
}

func decodeEpoch(b []byte) (uint64, error) {
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cluster: bad epoch %q: %w", b, err)
	}
	return n, nil
}

func encodeJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil { // Member and Placement always marshal
		panic(err)
	}
	return string(b)
}

func decodeMember(b []byte) (Member, error) {
	var m Member
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("cluster: bad member %q: %w", b, err)
	}
	if m.ID == 0 {
		return m, errors.New("cluster: member with id 0")
	}
	return m, nil
}

func decodePlacement(b []byte) (Placement, error) {
	var p Placement
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("cluster: bad placement %q: %w", b, err)
	}
	return p, nil
}
