"""What `istioctl ztunnel-config` decodes /config_dump into, transcribed
(field names, json tags and Go types only) from istio/istio
istioctl/pkg/writer/ztunnel/configdump/api.go and configdump.go (Prime,
unmarshalListOrMap) at commit 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c, for
godecode. prime(text) fails where istioctl's ConfigWriter.Prime would."""

import godecode as g

U16 = g.Int(16, False)
U32 = g.Int(32, False)
INT = g.Int(64)
STRS = g.Slice(g.STRING)

Locality = g.Struct('Locality', [('Region', 'region', g.STRING), ('Zone', 'zone', g.STRING),
                                 ('Subzone', 'subzone', g.STRING)])
GatewayAddress = g.Struct('GatewayAddress', [('Destination', 'destination', g.STRING)])
ApplicationTunnel = g.Struct('ApplicationTunnel', [('Protocol', 'protocol', g.STRING),
                                                   ('Port', 'port', g.Ptr(U16))])
ZtunnelWorkload = g.Struct('ZtunnelWorkload', [
    ('UID', 'uid', g.STRING),
    ('WorkloadIPs', 'workloadIps', STRS),
    ('Waypoint', 'waypoint', g.Ptr(GatewayAddress)),
    ('NetworkGateway', 'networkGateway', g.Ptr(GatewayAddress)),
    ('Protocol', 'protocol', g.STRING),
    ('Name', 'name', g.STRING),
    ('Namespace', 'namespace', g.STRING),
    ('ServiceAccount', 'serviceAccount', g.STRING),
    ('WorkloadName', 'workloadName', g.STRING),
    ('WorkloadType', 'workloadType', g.STRING),
    ('CanonicalName', 'canonicalName', g.STRING),
    ('CanonicalRevision', 'canonicalRevision', g.STRING),
    ('ClusterID', 'clusterId', g.STRING),
    ('TrustDomain', 'trustDomain', g.STRING),
    ('Locality', 'locality', Locality),
    ('Node', 'node', g.STRING),
    ('Network', 'network', g.STRING),
    ('Status', 'status', g.STRING),
    ('Hostname', 'hostname', g.STRING),
    ('Capacity', 'capacity', U32),
    ('ApplicationTunnel', 'applicationTunnel', ApplicationTunnel),
    ('AuthorizationPolicies', 'authorizationPolicies', STRS),
])
LoadBalancer = g.Struct('LoadBalancer', [('Mode', 'mode', g.STRING), ('RoutingPreferences', 'routingPreferences', STRS),
                                         ('HealthPolicy', 'healthPolicy', g.STRING)])
ZtunnelEndpoint = g.Struct('ZtunnelEndpoint', [
    ('WorkloadUID', 'workloadUid', g.STRING),
    ('Service', 'service', g.STRING),
    ('Address', 'address', g.STRING),
    ('Port', 'port', g.Map(U16, U16)),
])
_CIDRVIPStruct = g.Struct('CIDRVIP', [('CIDR', 'cidr', g.STRING), ('Network', 'network', g.STRING)])


def _cidrvip(v, path):
    # CIDRVIP.UnmarshalJSON: the struct form, else a "network/cidr" string
    try:
        return g.decode(v, _CIDRVIPStruct, path)
    except g.DecodeError:
        pass
    s = g.decode(v, g.STRING, path)
    if '/' not in s:
        raise g.DecodeError('invalid cidrVip %r (at %s)' % (s, path))
    network, cidr = s.split('/', 1)
    return {'Network': network, 'CIDR': cidr}


ZtunnelService = g.Struct('ZtunnelService', [
    ('Name', 'name', g.STRING),
    ('Namespace', 'namespace', g.STRING),
    ('Hostname', 'hostname', g.STRING),
    ('Addresses', 'vips', STRS),
    ('CIDRVIPs', 'cidrVips', g.Slice(g.Custom('CIDRVIP', _cidrvip))),
    ('Ports', 'ports', g.Map(g.STRING, INT)),
    ('LoadBalancer', 'loadBalancer', g.Ptr(LoadBalancer)),
    ('Waypoint', 'waypoint', g.Ptr(GatewayAddress)),
    ('Endpoints', 'endpoints', g.Map(g.STRING, g.Ptr(ZtunnelEndpoint))),
    ('SubjectAltNames', 'subjectAltNames', STRS),
    ('IPFamilies', 'ipFamilies', g.STRING),
    ('Canonical', 'canonical', g.BOOL),
    ('Visibility', 'visibility', g.STRING),
])
StringMatch = g.Struct('StringMatch', [('Exact', 'Exact', g.STRING), ('Suffix', 'Suffix', g.STRING),
                                       ('Prefix', 'Prefix', g.STRING), ('Presence', 'Presence', g.ANY)])
ServiceAccountMatch = g.Struct('ServiceAccountMatch', [('Namespace', 'namespace', g.STRING),
                                                       ('ServiceAccount', 'serviceAccount', g.STRING)])
_SM = g.Slice(StringMatch)
_SAM = g.Slice(ServiceAccountMatch)
PolicyMatch = g.Struct('PolicyMatch', [
    ('Namespaces', 'namespaces', _SM), ('NotNamespaces', 'notNamespaces', _SM),
    ('Principals', 'principals', _SM), ('NotPrincipals', 'notPrincipals', _SM),
    ('SourceIps', 'sourceIps', STRS), ('NotSourceIps', 'notSourceIps', STRS),
    ('DestinationIps', 'destinationIps', STRS), ('NotDestinationIps', 'notDestinationIps', STRS),
    ('DestinationPorts', 'destinationPorts', g.Slice(U16)),
    ('NotDestinationPorts', 'notDestinationPorts', g.Slice(U16)),
    ('ServiceAccounts', 'serviceAccounts', _SAM), ('NotServiceAccounts', 'notServiceAccounts', _SAM),
])
ZtunnelPolicy = g.Struct('ZtunnelPolicy', [
    ('Name', 'name', g.STRING), ('Namespace', 'namespace', g.STRING), ('Scope', 'scope', g.STRING),
    ('Action', 'action', g.STRING), ('Rules', 'rules', g.Slice(g.Slice(g.Slice(g.Ptr(PolicyMatch))))),
])
Cert = g.Struct('Cert', [('Pem', 'pem', g.STRING), ('SerialNumber', 'serialNumber', g.STRING),
                         ('ValidFrom', 'validFrom', g.STRING), ('ExpirationTime', 'expirationTime', g.STRING)])
CertsDump = g.Struct('CertsDump', [('Identity', 'identity', g.STRING), ('State', 'state', g.STRING),
                                   ('CertChain', 'certChain', g.Slice(g.Ptr(Cert))),
                                   ('RootCert', 'rootCerts', g.Slice(g.Ptr(Cert)))])
_Conn = [('Src', 'src', g.STRING), ('OriginalDst', 'originalDst', g.STRING),
         ('ActualDst', 'actualDst', g.STRING), ('Protocol', 'protocol', g.STRING)]
InboundConnection = g.Struct('InboundConnection', _Conn)
OutboundConnection = g.Struct('OutboundConnection', _Conn)
WorkloadConnections = g.Struct('WorkloadConnections', [('Inbound', 'inbound', g.Slice(InboundConnection)),
                                                       ('Outbound', 'outbound', g.Slice(OutboundConnection))])
WorkloadInfo = g.Struct('WorkloadInfo', [('Name', 'name', g.STRING), ('Namespace', 'namespace', g.STRING),
                                         ('TrustDomain', 'trustDomain', g.STRING),
                                         ('ServiceAccount', 'serviceAccount', g.STRING)])
WorkloadState = g.Struct('WorkloadState', [('State', 'state', g.STRING),
                                           ('Connections', 'connections', WorkloadConnections),
                                           ('Info', 'info', WorkloadInfo)])
rawDump = g.Struct('rawDump', [
    ('Services', 'services', g.RAW), ('Workloads', 'workloads', g.RAW), ('Policies', 'policies', g.RAW),
    ('Certificates', 'certificates', g.RAW), ('WorkloadState', 'workloadstate', g.Map(g.STRING, WorkloadState)),
])


def _list_or_map(raw, elem, path):
    # unmarshalListOrMap: empty -> nothing; '[' -> a list; else a map's values
    if isinstance(raw, list) and not isinstance(raw, g._Obj):
        return g.decode(raw, g.Slice(elem), path)
    m = g.decode(raw, g.Map(g.STRING, elem), path)
    return list(m.values()) if m else []


def prime(text):
    """ConfigWriter.Prime: returns the ZtunnelDump as dicts, or raises
    godecode.DecodeError."""
    raw = g.unmarshal(text, rawDump)
    return {
        'Services': _list_or_map(raw['Services'], g.Ptr(ZtunnelService), '.services'),
        'Workloads': _list_or_map(raw['Workloads'], g.Ptr(ZtunnelWorkload), '.workloads'),
        'Certificates': _list_or_map(raw['Certificates'], g.Ptr(CertsDump), '.certificates'),
        'Policies': _list_or_map(raw['Policies'], g.Ptr(ZtunnelPolicy), '.policies'),
        'WorkloadState': raw['WorkloadState'] or {},
    }
