package runtimecfg

import (
	"testing"

	nodev1 "k8s.io/api/node/v1"
	nodev1alpha1 "k8s.io/api/node/v1alpha1"
	nodev1beta1 "k8s.io/api/node/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The manifests decode strictly (no unknown or misspelt field) into the
// Kubernetes API types of their version and name the handler the merge
// configures.
func TestRuntimeClassManifestsMatchTheAPITypes(t *testing.T) {
	check := func(name, manifest, apiVersion string, tm *metav1.TypeMeta, om *metav1.ObjectMeta, obj any, handler func() string, selector func() map[string]string) {
		t.Run(apiVersion, func(t *testing.T) {
			if err := yaml.UnmarshalStrict([]byte(manifest), obj); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if tm.APIVersion != apiVersion || tm.Kind != "RuntimeClass" || om.Name != Handler {
				t.Errorf("%s: %s %s %s", name, tm.APIVersion, tm.Kind, om.Name)
			}
			if h := handler(); h != Handler {
				t.Errorf("%s: handler %q, want %q", name, h, Handler)
			}
			if selector != nil {
				if v := selector()[NodeLabel]; v != "true" {
					t.Errorf("%s: nodeSelector %v lacks %s=true", name, selector(), NodeLabel)
				}
			}
		})
	}
	var v1 nodev1.RuntimeClass
	check("RuntimeClass", RuntimeClass, "node.k8s.io/v1", &v1.TypeMeta, &v1.ObjectMeta, &v1,
		func() string { return v1.Handler },
		func() map[string]string {
			if v1.Scheduling == nil {
				return nil
			}
			return v1.Scheduling.NodeSelector
		})
	var beta nodev1beta1.RuntimeClass
	check("RuntimeClassV1beta1", RuntimeClassV1beta1, "node.k8s.io/v1beta1", &beta.TypeMeta, &beta.ObjectMeta, &beta,
		func() string { return beta.Handler },
		func() map[string]string {
			if beta.Scheduling == nil {
				return nil
			}
			return beta.Scheduling.NodeSelector
		})
	var alpha nodev1alpha1.RuntimeClass
	check("RuntimeClassV1alpha1", RuntimeClassV1alpha1, "node.k8s.io/v1alpha1", &alpha.TypeMeta, &alpha.ObjectMeta, &alpha,
		func() string { return alpha.Spec.RuntimeHandler }, nil)
}
