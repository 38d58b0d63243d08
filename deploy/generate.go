package deploy

// The Helm chart reads these two files of the kustomize tree as they are; Helm
// can only read files inside the chart, so they are copied there. TestChartFiles
// fails when a copy differs from its source.
//go:generate cp components/monitoring/prometheusrule.yaml helm/nodelocaldns/files/prometheusrule.yaml
//go:generate cp overlays/cilium/localredirectpolicy.yaml helm/nodelocaldns/files/localredirectpolicy.yaml
