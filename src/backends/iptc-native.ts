// Declaration of the addon's libiptc surface (filled in by the iptables-legacy backend work).
export interface NativeIptcBinding {}
