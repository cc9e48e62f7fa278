CREATE TABLE notes (text text);
INSERT INTO notes VALUES ('dumped');
