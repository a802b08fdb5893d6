import org.jetbrains.kotlin.gradle.dsl.JvmTarget

// The sample's chat state machine: plain Kotlin/JVM, no Android imports, so it is tested on the
// desktop JVM against the host-built library. CI runs those tests with
// scripts/test-android-logic.sh (no Gradle or Android SDK needed); `gradle :chat-logic:test`
// runs the same tests here.
plugins {
    alias(libs.plugins.kotlin.jvm)
}

val repoRoot: File = projectDir.resolve("../..").canonicalFile

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
        // As in the scripts: warnings in hand-written code are errors.
        allWarningsAsErrors.set(true)
    }
}

// The library's Kotlin API, compiled from the same sources as :phimobile's AAR, for the JVM
// (JNA's desktop jar). compileOnly for main: in the app these classes come from :phimobile, once.
val phimobileApi: SourceSet by sourceSets.creating {
    java.srcDir(repoRoot.resolve("bindings/kotlin/src/main/kotlin"))
}
// Generated code: its warnings are not ours to fix.
tasks.named<org.jetbrains.kotlin.gradle.tasks.KotlinCompile>("compilePhimobileApiKotlin") {
    compilerOptions.allWarningsAsErrors.set(false)
}

dependencies {
    "phimobileApiImplementation"(libs.jna)
    "phimobileApiImplementation"(libs.kotlinx.coroutines.core)

    compileOnly(phimobileApi.output)
    compileOnly(libs.jna)
    implementation(libs.kotlinx.coroutines.core)

    testImplementation(phimobileApi.output)
    testImplementation(libs.jna)
    testImplementation(libs.kotlin.test.junit5)
    testImplementation(platform(libs.junit.bom))
    testImplementation(libs.junit.jupiter)
    testRuntimeOnly(libs.junit.platform.launcher)
}

// The host library and the test models, as scripts/test-android-logic.sh prepares them.
val cache = providers.environmentVariable("PHI_MOBILE_CACHE").getOrElse("${System.getProperty("user.home")}/.cache/phi-mobile")
val cargoTarget = providers.environmentVariable("CARGO_TARGET_DIR").map { File(it) }.getOrElse(repoRoot.resolve("target"))
val referenceModel = layout.buildDirectory.file("fixtures/reference.gguf")

val hostFixtures = tasks.register<Exec>("hostFixtures") {
    description = "Builds the host libphi_mobile.so and writes the test models."
    workingDir = repoRoot
    val out = referenceModel.get().asFile
    commandLine(
        "bash", "-c",
        "scripts/fetch-fixtures.sh && cargo build --release --quiet --lib --example synthetic_gguf && " +
            "mkdir -p '${out.parent}' && '${cargoTarget.resolve("release/examples/synthetic_gguf")}' reference '$out'",
    )
}

tasks.test {
    dependsOn(hostFixtures)
    useJUnitPlatform()
    maxHeapSize = "1g"
    systemProperty("jna.library.path", cargoTarget.resolve("release").path)
    systemProperty("phimobile.smollm2", "$cache/SmolLM2-135M-Instruct.Q4_1.gguf")
    systemProperty("phimobile.referenceModel", referenceModel.get().asFile.path)
    systemProperty("phimobile.tokenizer", "$cache/phi3-tokenizer.json")
}
