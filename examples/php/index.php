<?php
// The smallest ConPaaS php site: `conpaas push SERVICE examples/php`. Every instance gets its
// code version's label as an environment variable, and the router names the environment serving
// each request in the X-Conpaas-Env header (it follows a swap), so the page says which of them
// served it (production, or a preview). A pretty URL (/any/path) reaches this
// front controller too.
header('Content-Type: text/plain; charset=utf-8');
$service = getenv('CONPAAS_SERVICE') ?: '?';
$environment = $_SERVER['HTTP_X_CONPAAS_ENV'] ?? '?';
$version = getenv('CONPAAS_VERSION') ?: '?';
echo "Hello from $service: $environment serves version $version (PHP " . PHP_VERSION . ")\n";
