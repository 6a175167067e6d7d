//go:build !race

package storage_test

const raceBuild = false
