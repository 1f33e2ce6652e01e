module github.com/nokmem/nokmem

go 1.26.0

tool github.com/magefile/mage

require (
	github.com/bluekeyes/go-gitdiff v0.9.0
	github.com/hashicorp/go-version v1.9.0
	golang.org/x/sys v0.49.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/magefile/mage v1.17.2 // indirect
	golang.org/x/mod v0.42.0 // indirect
)
