<%@ page contentType="text/plain; charset=UTF-8" session="false" %><%
    // The version's label is an environment variable; the router names the environment serving this
    // request in the X-Conpaas-Env header (it follows a swap).
    String service = System.getenv().getOrDefault("CONPAAS_SERVICE", "?");
    String environment = request.getHeader("X-Conpaas-Env") != null ? request.getHeader("X-Conpaas-Env") : "?";
    String version = System.getenv().getOrDefault("CONPAAS_VERSION", "?");
%>Hello from <%= service %>: <%= environment %> serves version <%= version %> (Tomcat <%= application.getServerInfo() %>)
