<%@ page contentType="text/plain; charset=UTF-8" session="false" %><%
    // Every instance gets its environment's name and its code version's label as environment variables.
    String service = System.getenv().getOrDefault("CONPAAS_SERVICE", "?");
    String environment = System.getenv().getOrDefault("CONPAAS_ENV", "?");
    String version = System.getenv().getOrDefault("CONPAAS_VERSION", "?");
%>Hello from <%= service %>: <%= environment %> serves version <%= version %> (Tomcat <%= application.getServerInfo() %>)
