<?php
# MediaWiki on ConPaaS: what MediaWiki's installer writes into LocalSettings.php, but for what the
# platform gives an instance. The only file of the code version that is not Debian's MediaWiki
# (examples/mediawiki/build.py packs them together).
#
# - The database is the linked postgresql service: DATABASE_URL=postgres://user:pass@host:port/db
#   in the instance's environment. Its tables are in the schema `mediawiki`, as the installer
#   made them (the dump, wiki.sql, is the installer's own database).
# - The server name is each request's: the service's URL, a node's own address, any host name
#   the router is reached by; links and redirects keep the port.
# - Every backend node reads the same pages: no object cache of an instance's own (APCu is one
#   per php-fpm), the parser cache in the database.
# - The secret keys are derived from the database's password: the same on every node, known to
#   nobody but the platform and the service's owner, and not in the repository.
if ( !defined( 'MEDIAWIKI' ) ) {
	exit;
}
require_once "$IP/includes/PlatformSettings.php";

$wgSitename = "ConPaaS wiki";
$wgMetaNamespace = "Project";

$wgScriptPath = "";
$wgResourceBasePath = $wgScriptPath;
$wgAssumeProxiesUseDefaultProtocolPorts = false;  // the router's port is the Host header's
$wgServer = WebRequest::detectServer();

$conpaasDatabase = parse_url( getenv( 'DATABASE_URL' ) ?: 'postgres://localhost/' );
$wgDBtype = "postgres";
$wgDBserver = $conpaasDatabase['host'] ?? 'localhost';
$wgDBport = $conpaasDatabase['port'] ?? 5432;
$wgDBname = rawurldecode( ltrim( $conpaasDatabase['path'] ?? '', '/' ) );
$wgDBuser = rawurldecode( $conpaasDatabase['user'] ?? '' );
$wgDBpassword = rawurldecode( $conpaasDatabase['pass'] ?? '' );
$wgDBssl = false;
$wgDBmwschema = "mediawiki";

$wgSecretKey = hash( 'sha256', "mediawiki secret key\n$wgDBpassword" );
$wgUpgradeKey = substr( hash( 'sha256', "mediawiki upgrade key\n$wgDBpassword" ), 0, 16 );
$wgAuthenticationTokenVersion = "1";

$wgMainCacheType = CACHE_NONE;
$wgParserCacheType = CACHE_DB;
$wgMessageCacheType = CACHE_DB;
$wgSessionCacheType = CACHE_DB;
// Debian keeps caches and logs in /var; an instance writes its own temporary folder only.
// The localisation cache (built at an instance's first request) goes there, one per instance.
$wgCacheDirectory = sys_get_temp_dir() . '/mediawiki';
$wgDBerrorLog = false;
$wgDebugLogGroups = [ 'exception' => 'php://stderr', 'fatal' => 'php://stderr' ];  // php-fpm.log

// No mail, no uploads, nothing fetched from the internet.
$wgEnableEmail = false;
$wgEnableUserEmail = false;
$wgEnableUploads = false;
$wgUseImageMagick = false;
$wgUseInstantCommons = false;
$wgPingback = false;

$wgLanguageCode = "en";
$wgLocaltimezone = "UTC";
$wgRightsPage = "";
$wgRightsUrl = "";
$wgRightsText = "";
$wgRightsIcon = "";
$wgDiff3 = "/usr/bin/diff3";

$wgDefaultSkin = "vector";
wfLoadSkin( 'MonoBook' );
wfLoadSkin( 'Timeless' );
wfLoadSkin( 'Vector' );
